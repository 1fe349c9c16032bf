//! The e2e job compiles with the host JDK (`--release 8`) against the flink-dist jar of the
//! fixture image, and the jar holds the entry class the REST submission will name.

use xtask::fixtures::flink_base;

#[test]
fn job_compiles_against_the_images_flink_dist() {
    let work = tempfile::tempdir().unwrap();
    let dist = work.path().join("flink-dist.jar");
    std::fs::write(
        &dist,
        flink_base::flink_base_file("opt/flink/lib/flink-dist_2.11-1.10.3.jar").unwrap(),
    )
    .unwrap();
    let jar = xtask::e2e::flink_job::compile(&dist, work.path()).unwrap();
    let listing = std::process::Command::new("jar")
        .arg("--list")
        .arg("--file")
        .arg(&jar)
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&listing.stdout);
    let main = format!(
        "{}.class",
        xtask::e2e::flink_job::MAIN_CLASS.replace('.', "/")
    );
    assert!(
        listing.lines().any(|l| l == main),
        "{main} not in {listing}"
    );
    // Class files for Java 8 (major version 52): the image's JVM may be as old as 8.
    let class = std::fs::read(work.path().join("classes").join(&main)).unwrap();
    assert_eq!(&class[..4], &[0xca, 0xfe, 0xba, 0xbe]);
    assert_eq!(u16::from_be_bytes([class[6], class[7]]), 52);
    // The same sources give the same jar (fixed entry dates).
    let again = tempfile::tempdir().unwrap();
    let jar2 = xtask::e2e::flink_job::compile(&dist, again.path()).unwrap();
    assert_eq!(std::fs::read(&jar).unwrap(), std::fs::read(&jar2).unwrap());
}
