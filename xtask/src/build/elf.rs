//! What an ELF shared object needs and provides: `DT_NEEDED`, `DT_SONAME`, and the GNU
//! symbol versions it requires (`.gnu.version_r`) or defines (`.gnu.version_d`).

use anyhow::{Context, Result};
use object::elf::{FileHeader64, DT_NEEDED, DT_SONAME};
use object::read::elf::{Dyn, FileHeader};
use object::Endianness;
use std::path::Path;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ElfFacts {
    pub soname: Option<String>,
    pub needed: Vec<String>,
    /// (library file, version) pairs, e.g. (`libc.so.6`, `GLIBC_2.14`).
    pub version_needs: Vec<(String, String)>,
    pub version_defs: Vec<String>,
}

pub(crate) fn read(path: &Path) -> Result<ElfFacts> {
    let data = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    parse(&data).with_context(|| format!("parsing ELF file {}", path.display()))
}

pub(crate) fn parse(data: &[u8]) -> Result<ElfFacts> {
    let header = FileHeader64::<Endianness>::parse(data)?;
    let endian = header.endian()?;
    let sections = header.sections(endian, data)?;
    let mut facts = ElfFacts::default();

    if let Some((dyns, link)) = sections.dynamic(endian, data)? {
        let strings = sections.strings(endian, data, link)?;
        for d in dyns {
            let tag = d.d_tag(endian) as u32;
            if tag == DT_NEEDED || tag == DT_SONAME {
                let name = d.string(endian, strings)?;
                let name = String::from_utf8_lossy(name).into_owned();
                if tag == DT_NEEDED {
                    facts.needed.push(name);
                } else {
                    facts.soname = Some(name);
                }
            }
        }
    }
    if let Some((mut verneeds, link)) = sections.gnu_verneed(endian, data)? {
        let strings = sections.strings(endian, data, link)?;
        while let Some((verneed, mut auxes)) = verneeds.next()? {
            let file = String::from_utf8_lossy(verneed.file(endian, strings)?).into_owned();
            while let Some(aux) = auxes.next()? {
                let v = String::from_utf8_lossy(aux.name(endian, strings)?).into_owned();
                facts.version_needs.push((file.clone(), v));
            }
        }
    }
    if let Some((mut verdefs, link)) = sections.gnu_verdef(endian, data)? {
        let strings = sections.strings(endian, data, link)?;
        while let Some((_verdef, mut auxes)) = verdefs.next()? {
            // The first aux names the version itself; later ones name its parents.
            if let Some(aux) = auxes.next()? {
                let v = String::from_utf8_lossy(aux.name(endian, strings)?).into_owned();
                facts.version_defs.push(v);
            }
        }
    }
    Ok(facts)
}
