//! The assembly stage of `image`: it makes the `/opt/jemalloc` layer, the image config (the base's,
//! with `PATH`, `JEMALLOC_PATH`, the provenance labels and history added) and the manifest over the
//! base's layers, the jemalloc layer and the tools layer, each cached by digest.

use anyhow::Result;

use super::base::{Base, Target};
use super::cache::{cache_blob, cached_layer};
use super::context::RunContext;
use super::jemalloc::Jemalloc;
use super::tools_layer::Tools;
use crate::oci::{self, Blob, ConfigChanges};
use crate::progress::Step;

/// The new image: its config and manifest blobs, its layer descriptors, every blob it
/// names (config first), and the tag its layout gets.
pub(crate) struct Assembled {
    pub config: Blob,
    pub manifest: Blob,
    pub blobs: Vec<String>,
    pub tag: String,
}

/// Stage 5: assembles the layer, the config and the manifest.
pub(crate) fn assemble(
    run: &RunContext,
    base: &Base,
    target: &Target,
    jemalloc: &Jemalloc,
    tools: &Tools,
) -> Result<Assembled> {
    let layer = jemalloc_layer(run, jemalloc)?;
    let info = &jemalloc.info;
    let patches: Vec<String> = info.patches.iter().map(|p| p.name.clone()).collect();
    let changes = ConfigChanges {
        path_dir: format!("{}/bin", run.jspec.prefix),
        env: env(run),
        labels: labels(run, base, target, jemalloc, tools),
        history: format!(
            "flink-jemalloc: {} (jemalloc {} {}, patches {})",
            run.jspec.prefix,
            info.jemalloc_version,
            info.configure_flags.join(" "),
            patches.join(",")
        ),
        created: time::OffsetDateTime::from_unix_timestamp(run.req.source_date_epoch as i64)?
            .format(&time::format_description::well_known::Rfc3339)?,
    };
    let mut config = oci::config(&base.config, &layer.diff_id, &changes);
    oci::add_layer(
        &mut config,
        &tools.layer.diff_id,
        &changes.created,
        &format!(
            "flink-jemalloc: jeprof tools from debian {}: {}",
            target.suite,
            package_list(tools.pins.iter().map(|p| (&p.name, &p.version)))
        ),
    );
    let config = cache_blob(&run.cache, oci::OCI_CONFIG, oci::canonical(&config))?;
    let mut layers = base.oci_layers();
    layers.push(layer.descriptor());
    layers.push(tools.layer.descriptor());
    let mut annotations = base_annotations(run, base);
    annotations.extend(run.req.labels.iter().cloned());
    let manifest = cache_blob(
        &run.cache,
        crate::oci::OCI_MANIFEST,
        oci::canonical(&oci::manifest(&config, &layers, &annotations)),
    )?;
    let mut blobs = vec![config.digest.clone()];
    blobs.extend(
        layers
            .iter()
            .filter_map(|d| d["digest"].as_str().map(str::to_string)),
    );
    Ok(Assembled {
        config,
        manifest,
        blobs,
        tag: run.spec.output_tag(&info.jemalloc_version),
    })
}

/// Makes the `/opt/jemalloc` layer from the installed tree, cached by what the tree is (its
/// `build-info.json` names every input) and the epoch.
fn jemalloc_layer(run: &RunContext, jemalloc: &Jemalloc) -> Result<oci::LayerRef> {
    let step = Step::start("the /opt/jemalloc layer");
    let info = std::fs::read(jemalloc.tree.join("build-info.json"))?;
    let key = crate::digest::key_of([
        crate::digest::Sha256Hex::of_bytes(&info).to_string(),
        run.jspec.prefix.clone(),
        run.req.source_date_epoch.to_string(),
        crate::oci::LAYER_FORMAT.to_string(),
    ]);
    let (layer, cached) = cached_layer(&run.cache, "jemalloc", &key, || {
        Ok(oci::layer(oci::layer_tar(
            &jemalloc.tree,
            &run.jspec.prefix,
            run.req.source_date_epoch,
        )?))
    })?;
    step.done(format!(
        "{} ({} bytes compressed{})",
        layer.digest,
        layer.size,
        if cached { ", cached" } else { "" }
    ));
    Ok(layer)
}

/// Returns the spec's environment, `JEMALLOC_PATH`, and with `--preload` `LD_PRELOAD` and
/// `MALLOC_CONF`.
fn env(run: &RunContext) -> Vec<(String, String)> {
    let lib = format!("{}/lib/libjemalloc.so.2", run.jspec.prefix);
    let mut env: Vec<(String, String)> = run
        .spec
        .env
        .iter()
        .filter_map(|e| e.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    env.push(("JEMALLOC_PATH".to_string(), lib.clone()));
    if run.req.preload {
        env.push(("LD_PRELOAD".into(), lib));
        env.push(("MALLOC_CONF".into(), run.req.malloc_conf.clone()));
    }
    env
}

/// Returns `name=version` of each package, space-separated.
fn package_list<'a>(pins: impl Iterator<Item = (&'a String, &'a String)>) -> String {
    pins.map(|(n, v)| format!("{n}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Returns the base's name and digest, as OCI annotations and labels call them.
fn base_annotations(run: &RunContext, base: &Base) -> Vec<(String, String)> {
    vec![
        (
            "org.opencontainers.image.base.name".to_string(),
            run.base_text.clone(),
        ),
        (
            "org.opencontainers.image.base.digest".to_string(),
            base.digest.clone(),
        ),
    ]
}

/// Returns the provenance labels: the base, jemalloc (version, sha256, flags, patches, unwinder),
/// the sysroot, `--preload`, and the package lock as far as it is content (every layered and
/// sysroot package, name=version; mirrors stay out: they do not change bytes).
fn labels(
    run: &RunContext,
    base: &Base,
    target: &Target,
    jemalloc: &Jemalloc,
    tools: &Tools,
) -> Vec<(String, String)> {
    let info = &jemalloc.info;
    let ours = |k: &str, v: String| (format!("io.github.flink-jemalloc.{k}"), v);
    let jeprof_tools = tools
        .pins
        .iter()
        .filter(|p| super::deps::JEPROF_TOOLS.contains(&p.name.as_str()));
    let mut labels = base_annotations(run, base);
    labels.extend([
        ours("flink", run.spec.flink.clone()),
        ours("jemalloc.version", info.jemalloc_version.clone()),
        ours("jemalloc.sha256", info.source_sha256.clone()),
        ours("jemalloc.configure-flags", info.configure_flags.join(" ")),
        ours(
            "jemalloc.patches",
            info.patches
                .iter()
                .map(|p| p.name.clone())
                .collect::<Vec<_>>()
                .join(","),
        ),
        ours("jemalloc.unwinder", info.unwinder.to_string()),
        ours(
            "sysroot",
            format!(
                "{} {} libc6={}",
                target.facts.os_id, target.suite, jemalloc.sys_libc
            ),
        ),
        ours("preload", run.req.preload.to_string()),
        ours(
            "packages",
            package_list(tools.pins.iter().map(|p| (&p.name, &p.version))),
        ),
        ours(
            "sysroot.packages",
            package_list(info.sysroot_packages.iter().map(|p| (&p.name, &p.version))),
        ),
        ours(
            "tools",
            package_list(jeprof_tools.map(|p| (&p.name, &p.version))),
        ),
    ]);
    // The caller's labels (`--label`) come last: a key given twice keeps its last value.
    labels.extend(run.req.labels.iter().cloned());
    labels
}
