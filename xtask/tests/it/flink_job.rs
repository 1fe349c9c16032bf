//! The e2e jobs compile with the host JDK against the flink-dist jar of the fixture images
//! (the 1.x job with `--release 8`, the 2.x job with the image's Java, 17), and each jar
//! holds the entry class the REST submission will name.

use harness::fixtures::{flink2_base, flink_base};
use std::path::Path;
use xtask::e2e::flink_job;
use xtask::flink_version::{flink_version, FlinkVersion};

/// The class file major version of the job's main class in `classes/`.
fn main_class_major(work: &Path, jar: &Path) -> u16 {
    let listing = std::process::Command::new("jar")
        .arg("--list")
        .arg("--file")
        .arg(jar)
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&listing.stdout);
    let main = format!("{}.class", flink_job::MAIN_CLASS.replace('.', "/"));
    assert!(
        listing.lines().any(|l| l == main),
        "{main} not in {listing}"
    );
    let class = std::fs::read(work.join("classes").join(&main)).unwrap();
    assert_eq!(&class[..4], &[0xca, 0xfe, 0xba, 0xbe]);
    u16::from_be_bytes([class[6], class[7]])
}

#[test]
fn the_1x_job_compiles_against_the_images_flink_dist() {
    let _shared = crate::support::shared();
    let work = tempfile::tempdir().unwrap();
    let dist = work.path().join("flink-dist_2.11-1.10.3.jar");
    std::fs::write(
        &dist,
        flink_base::flink_base_file("opt/flink/lib/flink-dist_2.11-1.10.3.jar").unwrap(),
    )
    .unwrap();
    let flink = flink_version(&dist).unwrap();
    assert_eq!(flink.to_string(), "1.10.3");
    let release = flink_job::release_for(flink, Some(11));
    let jar = flink_job::compile(&dist, flink, release, work.path()).unwrap();
    // Class files for Java 8 (major version 52): the image's JVM may be as old as 8.
    assert_eq!(main_class_major(work.path(), &jar), 52);
    // The same sources give the same jar (fixed entry dates).
    let again = tempfile::tempdir().unwrap();
    let jar2 = flink_job::compile(&dist, flink, release, again.path()).unwrap();
    assert_eq!(std::fs::read(&jar).unwrap(), std::fs::read(&jar2).unwrap());
}

#[test]
fn the_2x_job_compiles_for_the_images_java() {
    let _shared = crate::support::shared();
    let work = tempfile::tempdir().unwrap();
    let dist = work.path().join("flink-dist-2.2.1.jar");
    let in_image = format!("{}/{}", flink_base::FLINK_HOME, flink2_base::FLINK_DIST_JAR);
    std::fs::write(&dist, flink2_base::flink2_base_file(&in_image).unwrap()).unwrap();
    let flink: FlinkVersion = flink_version(&dist).unwrap();
    assert_eq!(flink.to_string(), "2.2.1");
    let release = flink_job::release_for(flink, Some(17));
    let jar = flink_job::compile(&dist, flink, release, work.path()).unwrap();
    // Java 17 class files (major 61), compiled from e2e/job2 (the 1.x job does not compile
    // against Flink 2: RestartStrategies and setStateBackend are gone).
    assert_eq!(main_class_major(work.path(), &jar), 61);
    let one = "1.10.3".parse().unwrap();
    let wrong = tempfile::tempdir().unwrap();
    let e = flink_job::compile(&dist, one, 8, wrong.path()).unwrap_err();
    assert!(
        format!("{e:#}").contains("compiling the e2e job for Flink 1.10.3"),
        "{e:#}"
    );
}
