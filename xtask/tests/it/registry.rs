//! The registry client against loopback servers: the bearer-token challenge (anonymous and
//! with basic credentials at the token service), manifest lists resolved to linux/amd64,
//! digest verification of manifests and blobs, and the cache by digest.

use crate::support::{sha256_hex, BearerAuth, Fault, Server};
use serde_json::json;
use std::path::Path;
use xtask::project::Cache;
use xtask::registry::{Auths, Credentials, Reference, RegistryClient};

/// A static registry tree: `v2/<repo>/manifests/<ref>` and `v2/<repo>/blobs/<digest>`.
struct Fake {
    dir: tempfile::TempDir,
    layer: Vec<u8>,
    layer_digest: String,
    image_digest: String,
    index_digest: String,
}

fn fake() -> Fake {
    let dir = tempfile::tempdir().unwrap();
    let v2 = dir.path().join("v2/library/flink");
    std::fs::create_dir_all(v2.join("manifests")).unwrap();
    std::fs::create_dir_all(v2.join("blobs")).unwrap();
    let layer = b"layer bytes".to_vec();
    let layer_digest = format!("sha256:{}", sha256_hex(&layer));
    let config = br#"{"architecture":"amd64","os":"linux"}"#.to_vec();
    let config_digest = format!("sha256:{}", sha256_hex(&config));
    let image = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": config_digest, "size": config.len()},
        "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "digest": layer_digest, "size": layer.len()}]
    }))
    .unwrap();
    let image_digest = format!("sha256:{}", sha256_hex(&image));
    let arm = b"{}".to_vec();
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.list.v2+json",
        "manifests": [
            {"digest": format!("sha256:{}", sha256_hex(&arm)), "size": 2, "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
            {"digest": image_digest, "size": image.len(), "platform": {"os": "linux", "architecture": "amd64"}}
        ]
    }))
    .unwrap();
    let index_digest = format!("sha256:{}", sha256_hex(&index));
    std::fs::write(v2.join("manifests/1.10.3"), &index).unwrap();
    std::fs::write(v2.join("manifests").join(&image_digest), &image).unwrap();
    std::fs::write(v2.join("blobs").join(&layer_digest), &layer).unwrap();
    std::fs::write(v2.join("blobs").join(&config_digest), &config).unwrap();
    Fake {
        dir,
        layer,
        layer_digest,
        image_digest,
        index_digest,
    }
}

fn reference(server: &Server) -> Reference {
    format!("{}/library/flink:1.10.3", server.addr())
        .parse()
        .unwrap()
}

#[test]
fn bearer_challenge_then_index_to_linux_amd64() {
    let _shared = crate::support::shared();
    let f = fake();
    let server = Server::serve(vec![("/", f.dir.path().to_path_buf())]);
    server.set_auth(Some(BearerAuth {
        token: "t0ken".into(),
        basic: None,
    }));
    let client = RegistryClient::new(true, Auths::anonymous());
    let r = reference(&server);
    let (image, index) = client.image_manifest(&r).unwrap();
    assert_eq!(image.digest, f.image_digest);
    assert_eq!(index.unwrap().digest, f.index_digest);
    let queries = server.token_queries.lock().unwrap().clone();
    assert!(!queries.is_empty(), "a token was requested");
    assert!(
        queries[0].contains("scope=repository%3Alibrary%2Fflink%3Apull"),
        "{queries:?}"
    );
    assert!(
        queries[0].contains("service=loopback-registry"),
        "{queries:?}"
    );
    // The token is reused: one token request for both manifests.
    assert_eq!(queries.len(), 1, "{queries:?}");

    let cache_dir = tempfile::tempdir().unwrap();
    let cache = Cache::new(cache_dir.path());
    let p = client.blob(&r, &f.layer_digest, &cache).unwrap();
    assert_eq!(std::fs::read(&p).unwrap(), f.layer);
    // Cached by digest: no request the second time.
    let before = server.requests();
    client.blob(&r, &f.layer_digest, &cache).unwrap();
    assert_eq!(server.requests(), before);
}

/// A registry that hands anonymous pull tokens to anyone (as Docker Hub does) never sees the
/// credentials of another host: not at its token service, not on its API.
#[test]
fn credentials_go_to_their_own_registry_only() {
    let _shared = crate::support::shared();
    let f = fake();
    let server = Server::serve(vec![("/", f.dir.path().to_path_buf())]);
    server.set_auth(Some(BearerAuth {
        token: "anonymous".into(),
        basic: None,
    }));
    let r = reference(&server);
    let client = RegistryClient::new(
        true,
        Auths::anonymous().with(
            "push.example:5000",
            Credentials {
                username: "pusher".into(),
                password: "s3cret".into(),
            },
        ),
    );
    assert_eq!(client.image_manifest(&r).unwrap().0.digest, f.image_digest);
    let log = server.access_log.lock().unwrap().clone();
    assert!(log.iter().any(|(t, _)| t.starts_with("/token")), "{log:?}");
    for (target, authorization) in &log {
        assert!(
            authorization.is_empty() || authorization == "Bearer anonymous",
            "{target} was sent {authorization}"
        );
        if target.starts_with("/token") {
            assert_eq!(authorization, "", "the token service got credentials");
        }
    }
}

#[test]
fn token_service_with_basic_credentials() {
    let _shared = crate::support::shared();
    let f = fake();
    let server = Server::serve(vec![("/", f.dir.path().to_path_buf())]);
    server.set_auth(Some(BearerAuth {
        token: "t".into(),
        basic: Some(("ci".into(), "s3cret".into())),
    }));
    let r = reference(&server);
    let anonymous = RegistryClient::new(true, Auths::anonymous())
        .image_manifest(&r)
        .unwrap_err()
        .to_string();
    assert!(
        anonymous.contains("token service") && anonymous.contains("401"),
        "{anonymous}"
    );
    let wrong = RegistryClient::new(
        true,
        Auths::anonymous().with(
            &r.registry,
            Credentials {
                username: "ci".into(),
                password: "nope".into(),
            },
        ),
    );
    assert!(wrong.image_manifest(&r).is_err());
    let right = RegistryClient::new(
        true,
        Auths::anonymous().with(
            &r.registry,
            Credentials {
                username: "ci".into(),
                password: "s3cret".into(),
            },
        ),
    );
    assert_eq!(right.image_manifest(&r).unwrap().0.digest, f.image_digest);
}

#[test]
fn digest_mismatches_are_refused_and_nothing_is_cached() {
    let _shared = crate::support::shared();
    let f = fake();
    let server = Server::serve(vec![("/", f.dir.path().to_path_buf())]);
    let client = RegistryClient::new(true, Auths::anonymous());
    let r = reference(&server);
    server.set_fault(Fault::Tamper);
    let cache_dir = tempfile::tempdir().unwrap();
    let cache = Cache::new(cache_dir.path());
    let err = format!(
        "{:#}",
        client.blob(&r, &f.layer_digest, &cache).unwrap_err()
    );
    assert!(
        err.contains("sha256 mismatch") && err.contains(&f.layer_digest[7..]),
        "{err}"
    );
    assert!(!cache.blob(&f.layer_digest[7..]).exists());
    assert!(crate::support::files_below(cache_dir.path()).is_empty());
    let err = client
        .manifest(&r, &f.image_digest)
        .unwrap_err()
        .to_string();
    assert!(err.contains("manifest digest mismatch"), "{err}");
}

#[test]
fn missing_image_names_the_reference() {
    let _shared = crate::support::shared();
    let f = fake();
    let server = Server::serve(vec![("/", f.dir.path().to_path_buf())]);
    let r: Reference = format!("{}/library/flink:9.9", server.addr())
        .parse()
        .unwrap();
    let err = RegistryClient::new(true, Auths::anonymous())
        .image_manifest(&r)
        .unwrap_err()
        .to_string();
    assert!(err.contains("404") && err.contains("flink:9.9"), "{err}");
    assert!(!Path::new(&f.dir.path().join("v2/library/flink/manifests/9.9")).exists());
}

/// Against a real registry (distribution's htpasswd auth answers with a Basic challenge):
/// anonymous pushes are refused with a clear message, credentials push blobs and a manifest,
/// and a second push skips the blobs the registry already has.
#[test]
fn push_with_basic_auth_to_a_real_registry() {
    let _shared = crate::support::shared();
    let reg = harness::fixtures::registry::Registry::start_with_htpasswd("ci", "s3cret").unwrap();
    let r: Reference = format!("{}/pushed/img:v1", reg.url().trim_start_matches("http://"))
        .parse()
        .unwrap();
    let layer = xtask::oci::layer(b"not really a tar, but a blob".to_vec());
    let config = xtask::oci::Blob::new(
        xtask::oci::OCI_CONFIG,
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#
            .to_vec(),
    );
    let manifest = xtask::oci::Blob::new(
        xtask::oci::OCI_MANIFEST,
        xtask::oci::canonical(&xtask::oci::manifest(
            &config,
            &[layer.blob.descriptor()],
            &[],
        )),
    );

    let anonymous = RegistryClient::new(true, Auths::anonymous());
    let err = anonymous
        .push_blob(&r, &config.digest, &config.data)
        .unwrap_err()
        .to_string();
    assert!(err.contains("needs credentials"), "{err}");

    let client = RegistryClient::new(
        true,
        Auths::anonymous().with(
            &r.registry,
            Credentials {
                username: "ci".into(),
                password: "s3cret".into(),
            },
        ),
    );
    assert!(
        client.push_blob(&r, &config.digest, &config.data).unwrap(),
        "uploaded"
    );
    assert!(
        client
            .push_blob(&r, &layer.blob.digest, &layer.blob.data)
            .unwrap(),
        "uploaded"
    );
    assert!(
        !client.push_blob(&r, &config.digest, &config.data).unwrap(),
        "skipped: already there"
    );
    let digest = client
        .put_manifest(&r, "v1", &manifest.data, xtask::oci::OCI_MANIFEST)
        .unwrap();
    assert_eq!(digest, manifest.digest);
    let (back, _) = client.image_manifest(&r).unwrap();
    assert_eq!(back.digest, manifest.digest);
    assert_eq!(back.bytes, manifest.data);
}
