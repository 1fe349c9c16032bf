//! jeprof's tools resolved against the fixture Flink base: the same packages apt itself
//! would install (`apt-get -s install --no-install-recommends` over the same signed
//! repository and the same dpkg status), a bad signature and a tampered `.deb` refused.

use harness::fixtures::{self, flink_base};
use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use xtask::debian::repo::{self, Repo};
use xtask::download::Downloader;
use xtask::image::deps::{self, Installed};
use xtask::project::Cache;

fn repo_of<'a>(mirror: &'a str, keyring: &'a Path) -> Repo<'a> {
    Repo {
        mirror,
        suite: "bullseye",
        component: "main",
        arch: "amd64",
        keyring: Some(keyring),
    }
}

/// What apt would install on the base, from the same repository and status.
fn apt_simulation(repo_dir: &Path, keyring: &Path, status: &Path, work: &Path) -> BTreeSet<String> {
    let apt = work.join("apt");
    std::fs::create_dir_all(apt.join("state/lists/partial")).unwrap();
    std::fs::create_dir_all(apt.join("cache/archives/partial")).unwrap();
    std::fs::write(
        apt.join("sources.list"),
        format!(
            "deb [signed-by={}] file:{} bullseye main\n",
            keyring.display(),
            repo_dir.display()
        ),
    )
    .unwrap();
    let opts = [
        format!(
            "-oDir::Etc::SourceList={}",
            apt.join("sources.list").display()
        ),
        "-oDir::Etc::SourceParts=/dev/null".into(),
        format!("-oDir::State={}", apt.join("state").display()),
        format!("-oDir::Cache={}", apt.join("cache").display()),
        format!("-oDir::State::status={}", status.display()),
        "-oAPT::Architecture=amd64".into(),
        "-oAPT::Architectures=amd64".into(),
        "-oAPT::Sandbox::User=root".into(),
        "-oAcquire::Languages=none".into(),
    ];
    let update = Command::new("apt-get")
        .args(&opts)
        .args(["-q", "update"])
        .output()
        .unwrap();
    assert!(
        update.status.success(),
        "{}",
        String::from_utf8_lossy(&update.stderr)
    );
    let sim = Command::new("apt-get")
        .args(&opts)
        .args(["-s", "-q", "install", "--no-install-recommends"])
        .args(deps::JEPROF_TOOLS)
        .output()
        .unwrap();
    assert!(
        sim.status.success(),
        "{}",
        String::from_utf8_lossy(&sim.stderr)
    );
    String::from_utf8_lossy(&sim.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("Inst "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

#[test]
fn resolution_matches_apt_on_the_fixture_base() {
    let _shared = crate::support::shared();
    let repo = fixtures::debian_repo_with_tools("bullseye").unwrap();
    let status = flink_base::flink_base_dpkg_status().unwrap();
    let work = tempfile::tempdir().unwrap();
    let cache = Cache::new(work.path().join("cache"));
    let mirror = format!("file://{}", repo.dir.display());
    let index =
        repo::fetch_index(&Downloader::new(), &cache, &repo_of(&mirror, &repo.keyring)).unwrap();
    let installed = Installed::from_status(&status).unwrap();
    assert!(
        installed.packages.contains_key("libc6") && installed.packages.contains_key("perl-base")
    );
    let ours: BTreeSet<String> = deps::resolve(&index, &installed, deps::JEPROF_TOOLS, "amd64")
        .unwrap()
        .into_iter()
        .map(|r| r.name.clone())
        .collect();
    for p in ["binutils", "graphviz", "file", "libgvc6", "libmagic1"] {
        assert!(ours.contains(p), "{p} missing from {ours:?}");
    }
    assert!(
        !ours.contains("libc6") && !ours.contains("perl-base"),
        "the base's packages are not added again"
    );
    let status_file = work.path().join("status");
    std::fs::write(&status_file, &status).unwrap();
    let apt = apt_simulation(&repo.dir, &repo.keyring, &status_file, work.path());
    assert_eq!(ours, apt, "our closure and apt's differ");
}

#[test]
fn bad_signature_and_tampered_deb_are_refused() {
    let _shared = crate::support::shared();
    let repo = fixtures::debian_repo_with_tools("bullseye").unwrap();
    let work = tempfile::tempdir().unwrap();
    let copy = work.path().join("repo");
    let cp = Command::new("cp")
        .arg("-a")
        .arg(&repo.dir)
        .arg(&copy)
        .status()
        .unwrap();
    assert!(cp.success());
    let mirror = format!("file://{}", copy.display());
    let dl = Downloader::new();

    // A Release file changed after signing.
    let inrelease = copy.join("dists/bullseye/InRelease");
    let text = std::fs::read_to_string(&inrelease).unwrap();
    std::fs::write(
        &inrelease,
        text.replace("Codename: bullseye", "Codename: bullseyE"),
    )
    .unwrap();
    let cache = Cache::new(work.path().join("cache1"));
    let err = format!(
        "{:#}",
        repo::fetch_index(&dl, &cache, &repo_of(&mirror, &repo.keyring)).unwrap_err()
    );
    assert!(err.contains("no good signature"), "{err}");
    std::fs::write(&inrelease, text).unwrap();

    // A .deb whose bytes no longer match the index.
    let cache = Cache::new(work.path().join("cache2"));
    let index = repo::fetch_index(&dl, &cache, &repo_of(&mirror, &repo.keyring)).unwrap();
    let status = flink_base::flink_base_dpkg_status().unwrap();
    let chosen = deps::resolve(
        &index,
        &Installed::from_status(&status).unwrap(),
        &["file"],
        "amd64",
    )
    .unwrap();
    let libmagic = chosen
        .iter()
        .find(|r| r.name == "libmagic1")
        .expect("file needs libmagic1");
    let deb = copy.join(&libmagic.filename);
    let mut bytes = std::fs::read(&deb).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&deb, bytes).unwrap();
    let pins = xtask::image::tools_layer::pins(&chosen, &repo_of(&mirror, &repo.keyring));
    let tree = work.path().join("tree");
    std::fs::create_dir_all(&tree).unwrap();
    let err = format!(
        "{:#}",
        xtask::image::tools_layer::fill_tree(
            &dl,
            &cache,
            &mirror,
            &pins,
            &xtask::image::inspect::BaseFacts {
                os_id: "debian".into(),
                version_codename: Some("bullseye".into()),
                pretty_name: None,
                libc6_version: None,
                apt_sources: vec![],
                dpkg_status: status.clone(),
                dpkg_filters: vec![],
            },
            &tree
        )
        .unwrap_err()
    );
    assert!(
        err.contains("sha256 mismatch") && err.contains("libmagic1"),
        "{err}"
    );
    assert!(
        !cache.blob(&libmagic.sha256.to_string()).exists(),
        "the tampered .deb is not cached"
    );
}
