//! `cargo xtask leaks` as a user runs it: the catalogue listed with the growth of its
//! recorded runs, a release and its configuration checked (Flink 2's nested `config.yaml`
//! and 1.x's flat `flink-conf.yaml`), and bad input refused in one line.

use crate::support::{stderr, stdout, xtask};

#[test]
fn the_catalogue_is_listed_with_its_measured_growth() {
    let _shared = crate::support::shared();
    let o = xtask(&["leaks"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    for id in ["FLINK-39923", "FLINK-39753", "FLINK-40327", "FLINK-21986"] {
        assert!(text.contains(&format!("{id} — ")), "{id} missing: {text}");
    }
    // The recorded FLINK-39923 run's growth, read from its report.
    assert!(
        text.contains("reproduced: +365.0 ± 42.9 KiB per restart"),
        "{text}"
    );
    let one = stdout(&xtask(&["leaks", "flink-39753"]));
    assert!(one.starts_with("FLINK-39753 — "), "{one}");
    assert!(one.contains("first fixed: 1.20.5, 2.3.0"), "{one}");
    assert!(!one.contains("FLINK-39923"), "{one}");
}

#[test]
fn a_release_and_its_configuration_are_checked() {
    let _shared = crate::support::shared();
    let dir = tempfile::tempdir().unwrap();
    // Flink 2's config.yaml, nested, as the official image writes it.
    let nested = dir.path().join("config.yaml");
    std::fs::write(
        &nested,
        "state:\n  backend:\n    type: rocksdb\n    rocksdb:\n      metrics:\n        \
         block-cache-hit: true\n      manual-compaction:\n        min-interval: 30 s\n",
    )
    .unwrap();
    let o = xtask(&[
        "leaks",
        "--flink",
        "2.2.1",
        "--conf",
        nested.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(
        text.contains("FLINK-39923 (RocksDB Statistics never closed): EXPOSED"),
        "{text}"
    );
    assert!(text.contains("min-interval is 30 s"), "{text}");
    assert!(
        text.ends_with("Flink 2.2.1: the configuration is or may be exposed to 2 of the 4 known leak(s): FLINK-39923, FLINK-39753\n"),
        "{text}"
    );
    // The same settings on 2.3.0: the compactor's leak is fixed there.
    let o = xtask(&[
        "leaks",
        "--flink",
        "2.3.0",
        "--conf",
        nested.to_str().unwrap(),
    ]);
    let text = stdout(&o);
    assert!(
        text.contains("FLINK-39753 (SST-merge compactor leaks ColumnFamilyOptions, pinning the block cache): not exposed: Flink 2.3.0 has its fix"),
        "{text}"
    );
    // 1.x's flat flink-conf.yaml, with the 1.x backend key.
    let flat = dir.path().join("flink-conf.yaml");
    std::fs::write(
        &flat,
        "state.backend: rocksdb\ntaskmanager.numberOfTaskSlots: 2\n",
    )
    .unwrap();
    let o = xtask(&[
        "leaks",
        "--flink",
        "1.12.2",
        "--conf",
        flat.to_str().unwrap(),
    ]);
    let text = stdout(&o);
    assert!(
        text.contains("FLINK-21986 (ColumnFamilyOptions of getDescriptor() not closed on restart): EXPOSED: Flink 1.12.2 has it"),
        "{text}"
    );
    assert!(
        text.ends_with("1 of the 4 known leak(s): FLINK-21986\n"),
        "{text}"
    );
}

#[test]
fn bad_input_is_refused_in_one_line() {
    let _shared = crate::support::shared();
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("config.yaml");
    std::fs::write(&bad, "state: [unclosed\n").unwrap();
    for (args, says) in [
        (
            vec!["leaks", "--flink", "2.x"],
            "`2.x` is not a Flink version",
        ),
        (
            vec!["leaks", "FLINK-1"],
            "no leak `FLINK-1` in the catalogue; it has: FLINK-39923",
        ),
        (
            vec!["leaks", "--flink", "2.2.1", "--conf", bad.to_str().unwrap()],
            "is not YAML: give the Flink configuration file",
        ),
        (
            vec![
                "leaks",
                "--flink",
                "2.2.1",
                "--conf",
                "/nonexistent/config.yaml",
            ],
            "reading /nonexistent/config.yaml (--conf takes",
        ),
    ] {
        let o = xtask(&args);
        assert!(!o.status.success(), "{args:?}");
        let err = stderr(&o);
        assert!(err.contains(says), "{args:?}: {err}");
        assert!(stdout(&o).is_empty(), "{args:?}: nothing printed on error");
    }
}
