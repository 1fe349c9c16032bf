//! The flame graph of what grew between two heap dumps: the growing stacks of jeprof's
//! `--collapsed --base` output go through `inferno` into an interactive SVG (search, zoom),
//! with colours chosen by frame name so the same data gives the same file.

use anyhow::{Context, Result};
use inferno::flamegraph::{self, color::BasicPalette, color::Palette, Options};

/// Returns the SVG of `lines` (`root;…;leaf bytes`, positive), titled `title`.
pub(crate) fn flame_graph(title: &str, subtitle: &str, lines: &[String]) -> Result<Vec<u8>> {
    let mut opts = Options::default();
    opts.title = title.to_string();
    opts.subtitle = Some(subtitle.to_string());
    opts.count_name = "bytes".into();
    opts.name_type = "Site:".into();
    opts.colors = Palette::Basic(BasicPalette::Mem);
    opts.deterministic = true;
    let mut svg = Vec::new();
    if lines.is_empty() {
        // inferno refuses empty input; an empty graph still says why it is empty.
        let nothing = ["nothing grew 1".to_string()];
        flamegraph::from_lines(&mut opts, nothing.iter().map(String::as_str), &mut svg)
    } else {
        flamegraph::from_lines(&mut opts, lines.iter().map(String::as_str), &mut svg)
    }
    .context("drawing the flame graph (inferno)")?;
    Ok(svg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_stacks_give_the_same_svg() {
        let lines = vec![
            "Java_org_rocksdb_Statistics_newStatistics;rocksdb::StatisticsImpl::StatisticsImpl;\
             rocksdb::port::cacheline_aligned_alloc 972800"
                .to_string(),
            "main;os::malloc 4096".to_string(),
        ];
        let a = flame_graph("grew", "first..last", &lines).unwrap();
        let b = flame_graph("grew", "first..last", &lines).unwrap();
        assert_eq!(a, b);
        let svg = String::from_utf8(a).unwrap();
        assert!(svg.starts_with("<?xml") && svg.contains("cacheline_aligned_alloc"));
        assert!(svg.contains("<script"), "interactive");
        assert!(String::from_utf8(flame_graph("grew", "-", &[]).unwrap())
            .unwrap()
            .contains("nothing grew"));
    }
}
