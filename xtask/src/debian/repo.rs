//! A Debian repository's index: `dists/<suite>/{InRelease,Release}` and the `Packages` file
//! it lists. With a keyring, the Release file must carry a good signature from it (checked by
//! `gpgv`, as apt does); the `Packages` index must match the Release file's SHA256, and every
//! `.deb` later matches the index. `Valid-Until` is not enforced: for end-of-life suites
//! (buster on the archive host) it has long passed, and the digests, pinned in the lock,
//! are what make the content trustworthy.

use anyhow::{bail, Context, Result};
use std::io::Read;
use std::path::Path;
use xshell::{cmd, Shell};

use super::format::{self as debian, PackageRecord};
use crate::download::Downloader;
use crate::progress;
use crate::project::Cache;
use crate::unpack;

#[derive(Debug, Clone, Copy)]
pub struct Repo<'a> {
    pub mirror: &'a str,
    pub suite: &'a str,
    /// One component, or several separated by spaces (`main universe` on Ubuntu, where
    /// graphviz lives in universe): their indices are read in that order.
    pub component: &'a str,
    pub arch: &'a str,
    pub keyring: Option<&'a Path>,
}

/// Returns the verified text of the suite's Release file, or `None` when the mirror has none
/// (and no keyring asks for one).
pub(crate) fn release(dl: &Downloader, repo: &Repo) -> Result<Option<String>> {
    let base = format!("{}/dists/{}", repo.mirror.trim_end_matches('/'), repo.suite);
    let Some(keyring) = repo.keyring else {
        let url = format!("{base}/Release");
        if !dl.exists(&url)? {
            return Ok(None);
        }
        return Ok(Some(
            String::from_utf8(dl.get(&url)?).with_context(|| format!("{url} is not text"))?,
        ));
    };
    let sh = Shell::new()?;
    let tmp = tempfile::tempdir()?;
    let inrelease = format!("{base}/InRelease");
    if dl.exists(&inrelease)? {
        let file = tmp.path().join("InRelease");
        std::fs::write(&file, dl.get(&inrelease)?)?;
        let text = cmd!(sh, "gpgv --quiet --keyring {keyring} --output - {file}")
            .quiet()
            .ignore_stderr()
            .read()
            .with_context(|| {
                format!(
                    "{inrelease}: no good signature from a key in {} (gpgv)",
                    keyring.display()
                )
            })?;
        return Ok(Some(text));
    }
    let (url, sig) = (format!("{base}/Release"), format!("{base}/Release.gpg"));
    let (file, sigfile) = (tmp.path().join("Release"), tmp.path().join("Release.gpg"));
    std::fs::write(&file, dl.get(&url)?)?;
    std::fs::write(
        &sigfile,
        dl.get(&sig)
            .with_context(|| format!("{sig}: a keyring is configured but the suite is unsigned"))?,
    )?;
    cmd!(sh, "gpgv --quiet --keyring {keyring} {sigfile} {file}")
        .quiet()
        .ignore_stderr()
        .run()
        .with_context(|| {
            format!(
                "{url}: no good signature in {sig} from a key in {} (gpgv)",
                keyring.display()
            )
        })?;
    Ok(Some(std::fs::read_to_string(&file)?))
}

/// Downloads and parses `dists/<suite>/<component>/binary-<arch>/Packages{.xz,.gz,}` of each
/// of the repository's components, concatenated in order.
pub fn fetch_index(dl: &Downloader, cache: &Cache, repo: &Repo) -> Result<Vec<PackageRecord>> {
    let mut out = Vec::new();
    for component in repo.component.split_whitespace() {
        out.extend(fetch_component_index(
            dl,
            cache,
            &Repo { component, ..*repo },
        )?);
    }
    Ok(out)
}

fn fetch_component_index(
    dl: &Downloader,
    cache: &Cache,
    repo: &Repo,
) -> Result<Vec<PackageRecord>> {
    let base = format!("{}/dists/{}", repo.mirror.trim_end_matches('/'), repo.suite);
    let stem = format!("{}/binary-{}/Packages", repo.component, repo.arch);
    let candidates = [format!("{stem}.xz"), format!("{stem}.gz"), stem.clone()];
    let bytes = match release(dl, repo)? {
        Some(release) => {
            let entries =
                debian::parse_release(&release).with_context(|| format!("{base}/Release"))?;
            let Some((path, entry)) = candidates
                .iter()
                .find_map(|c| entries.get(c).map(|e| (c, e)))
            else {
                bail!(
                    "{base}/Release lists no {stem}[.xz|.gz]: is `{}` a component of {}, and \
                     does this mirror carry {}? (point --mirror at one that does)",
                    repo.component,
                    repo.suite,
                    repo.arch
                );
            };
            let blob = dl
                .fetch(cache, &format!("{base}/{path}"), &entry.sha256)
                .with_context(|| format!("the Packages index, verified against {base}/Release"))?;
            std::fs::read(blob)?
        }
        None => {
            progress::note(format!(
                "{base}/Release is missing: the Packages index cannot be verified"
            ));
            let mut found = None;
            for c in &candidates {
                let url = format!("{base}/{c}");
                if dl.exists(&url)? {
                    found = Some(dl.get(&url)?);
                    break;
                }
            }
            found.with_context(|| format!("no Packages index under {base}/{stem}[.xz|.gz]"))?
        }
    };
    let mut text = String::new();
    unpack::decompressed(std::io::Cursor::new(bytes))?
        .read_to_string(&mut text)
        .context("decompressing the Packages index")?;
    debian::parse_packages(&text)
}
