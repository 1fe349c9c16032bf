//! The Docker engine through its CLI (`docker`, via xshell), with errors that say what failed
//! and what to do: whether an engine answers, loading a docker-archive, the name a profiled
//! image gets in an engine (the same for `image --load`, `e2e` and kind), container state.

use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::path::Path;
use xshell::{cmd, Shell};

use crate::heap_profile::ContainerFiles;
use crate::kubectl::{error_text, on_path};
use crate::progress::Step;
use crate::teardown;

/// Where to get Docker, for error messages.
const DOCKER_INSTALL: &str =
    "install Docker: `apt-get install docker.io`, or https://docs.docker.com/engine/install/";

/// The repository profiled images get in a Docker engine or a kind node:
/// `localhost/flink-jemalloc:<the layout's tag>`. The tag is a real one (never `latest`), so
/// that Kubernetes' `IfNotPresent` uses the loaded image instead of pulling.
const LOCAL_REPOSITORY: &str = "localhost/flink-jemalloc";

/// Returns the name of the image whose OCI layout is tagged `ref_name`, once loaded.
pub fn image_name(ref_name: &str) -> String {
    let tag: String = ref_name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .take(128)
        .collect();
    let tag = if tag.is_empty() || tag == "latest" {
        "profiled".to_string()
    } else {
        tag
    };
    format!("{LOCAL_REPOSITORY}:{tag}")
}

/// Returns what to do about a Docker engine that does not answer, from `docker version`'s
/// stderr.
fn engine_advice(stderr: &str) -> String {
    let text = error_text(stderr);
    if stderr.contains("permission denied") {
        format!(
            "this user may not use the Docker engine ({text}): add it to the `docker` group \
             (`sudo usermod -aG docker $USER`, then log in again) or run with sudo"
        )
    } else {
        format!(
            "the Docker engine does not answer ({text}): start it (`sudo systemctl start docker`, \
             or `sudo dockerd &`), or point DOCKER_HOST at one"
        )
    }
}

/// Returns whether `docker` is on the PATH and its engine answers.
pub fn engine_answers() -> bool {
    on_path("docker", &std::env::var_os("PATH").unwrap_or_default()) && engine_check().is_ok()
}

fn engine_check() -> Result<()> {
    let sh = Shell::new()?;
    let format = "{{.Server.Version}}";
    let out = cmd!(sh, "docker version --format {format}")
        .quiet()
        .ignore_status()
        .output()?;
    if !out.status.success() {
        bail!("{}", engine_advice(&String::from_utf8_lossy(&out.stderr)));
    }
    Ok(())
}

/// Returns Ok when `docker` is on the PATH and its engine answers; `why` says what needs it
/// (`--driver docker`).
pub(crate) fn require(why: &str) -> Result<()> {
    if !on_path("docker", &std::env::var_os("PATH").unwrap_or_default()) {
        bail!("{why} needs `docker` on the PATH; {DOCKER_INSTALL}");
    }
    engine_check().with_context(|| format!("{why} needs a Docker engine"))
}

/// Runs `docker ARGS…` and returns its stdout. A failure names the command and docker's last
/// words.
pub fn docker(args: &[&str]) -> Result<Vec<u8>> {
    let sh = Shell::new()?;
    let out = cmd!(sh, "docker {args...}")
        .quiet()
        .ignore_status()
        .output()
        .with_context(|| format!("running docker ({DOCKER_INSTALL})"))?;
    if !out.status.success() {
        bail!(
            "`docker {}` failed ({}): {}",
            args.join(" "),
            out.status,
            error_text(&String::from_utf8_lossy(&out.stderr))
        );
    }
    Ok(out.stdout)
}

/// Returns [`docker`]'s stdout as text, trimmed.
pub fn docker_text(args: &[&str]) -> Result<String> {
    Ok(String::from_utf8_lossy(&docker(args)?).trim().to_string())
}

/// Returns the id (`sha256:…` of its config) of the image called `name`, if the engine has
/// it.
pub fn image_id(name: &str) -> Option<String> {
    docker_text(&["image", "inspect", "--format", "{{.Id}}", name]).ok()
}

/// Runs `docker load` on a docker-archive.
pub fn load(archive: &Path) -> Result<()> {
    let a = archive.to_string_lossy();
    docker(&["load", "--quiet", "--input", &a]).map(drop)
}

/// A profiled image loaded into the engine for a run, from its OCI layout, under
/// [`image_name`] of the layout's tag. When it is dropped (or the run interrupted), it is
/// removed again unless the engine had that name before (an `image --load` of the user's).
pub struct LoadedImage {
    pub name: String,
    remove: bool,
    _teardown: Option<teardown::Guard>,
}

impl LoadedImage {
    /// Loads `layout` (rewritten as a docker-archive in `work`) unless the engine has the
    /// same image (same id, i.e. config digest) under that name already.
    pub fn from_layout(layout: &Path, work: &Path) -> Result<LoadedImage> {
        let name = image_name(&crate::oci::layout_ref(layout)?.ref_name);
        let had = image_id(&name);
        let archive = work.join("image.docker.tar");
        let step = Step::start(format!("loading {name} into the Docker engine"));
        let config_digest = crate::oci::layout_to_docker_archive(layout, &archive, &name, 0)?;
        if had.as_deref() == Some(config_digest.as_str()) {
            let _ = std::fs::remove_file(&archive);
            step.done("the engine has it already");
            return Ok(LoadedImage {
                name,
                remove: false,
                _teardown: None,
            });
        }
        let remove = had.is_none();
        let teardown = remove.then(|| {
            let n = name.clone();
            teardown::on_interrupt(format!("image {n}"), move || {
                let _ = docker(&["image", "rm", "--force", &n]);
            })
        });
        let loaded = load(&archive);
        let _ = std::fs::remove_file(&archive);
        loaded.with_context(|| format!("loading {} into the Docker engine", layout.display()))?;
        step.done("");
        Ok(LoadedImage {
            name,
            remove,
            _teardown: teardown,
        })
    }
}

impl Drop for LoadedImage {
    fn drop(&mut self) {
        if self.remove {
            let _ = docker(&["image", "rm", "--force", &self.name]);
        }
    }
}

/// A container's state, as `docker inspect` gives it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ContainerState {
    pub running: bool,
    /// The kernel's OOM killer killed a process of the container.
    pub oom_killed: bool,
    pub exit_code: i64,
}

/// Parses the `State` of a `docker inspect` answer (an array of one container).
fn parse_state(inspect: &Value) -> Option<ContainerState> {
    let s = &inspect.get(0)?["State"];
    Some(ContainerState {
        running: s["Running"].as_bool()?,
        oom_killed: s["OOMKilled"].as_bool().unwrap_or(false),
        exit_code: s["ExitCode"].as_i64().unwrap_or(0),
    })
}

/// Returns the state of container `name`.
pub(crate) fn container_state(name: &str) -> Result<ContainerState> {
    let out = docker(&["container", "inspect", name])?;
    let v: Value = serde_json::from_slice(&out)
        .with_context(|| format!("docker container inspect {name}: not JSON"))?;
    parse_state(&v).with_context(|| format!("docker container inspect {name}: no State"))
}

/// Removes every container and network labelled `label` (`key=value`); best effort, for
/// teardown.
pub(crate) fn remove_labelled(label: &str) {
    let filter = format!("label={label}");
    if let Ok(ids) = docker_text(&["ps", "--all", "--quiet", "--filter", &filter]) {
        let ids: Vec<&str> = ids.split_whitespace().collect();
        if !ids.is_empty() {
            let mut args = vec!["rm", "--force", "--volumes"];
            args.extend(ids);
            let _ = docker(&args);
        }
    }
    if let Ok(nets) = docker_text(&["network", "ls", "--quiet", "--filter", &filter]) {
        for n in nets.split_whitespace() {
            let _ = docker(&["network", "rm", n]);
        }
    }
}

/// A Docker container, by name. Its files are listed with `docker exec ls` while it runs
/// and read from `docker cp`'s tar stream otherwise: `docker cp` also reads a stopped
/// container (an OOM-killed JVM's dumps and the JNI library it never got to delete).
pub(crate) struct Container(pub String);

impl ContainerFiles for Container {
    fn describe(&self) -> String {
        format!("container {}", self.0)
    }

    fn list(&self, dir: &str) -> Result<Vec<String>> {
        if let Ok(ls) = docker_text(&["exec", &self.0, "ls", "-1", "--", dir]) {
            return Ok(ls.lines().map(|l| l.trim().to_string()).collect());
        }
        let from = format!("{}:{dir}", self.0);
        let stream = docker(&["cp", &from, "-"])?;
        let mut names = Vec::new();
        for entry in tar::Archive::new(&stream[..]).entries()? {
            let path = entry?.path()?.into_owned();
            let parts: Vec<_> = path.components().collect();
            if parts.len() == 2 {
                names.push(parts[1].as_os_str().to_string_lossy().into_owned());
            }
        }
        Ok(names)
    }

    fn copy_file(&self, src: &str, dest: &Path) -> Result<()> {
        let from = format!("{}:{src}", self.0);
        let stream = docker(&["cp", "--follow-link", &from, "-"])?;
        for entry in tar::Archive::new(&stream[..]).entries()? {
            let mut entry = entry?;
            if entry.header().entry_type().is_file() {
                let mut f = std::fs::File::create(dest)
                    .with_context(|| format!("creating {}", dest.display()))?;
                std::io::copy(&mut entry, &mut f)
                    .with_context(|| format!("writing {}", dest.display()))?;
                return Ok(());
            }
        }
        bail!("`docker cp {from} -` holds no file")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_names_are_valid_references() {
        assert_eq!(
            image_name("1.10.3-scala_2.12-jemalloc-5.2.1-prof"),
            "localhost/flink-jemalloc:1.10.3-scala_2.12-jemalloc-5.2.1-prof"
        );
        assert_eq!(image_name("a/b:c"), "localhost/flink-jemalloc:a_b_c");
        assert_eq!(image_name("latest"), "localhost/flink-jemalloc:profiled");
        assert_eq!(image_name(""), "localhost/flink-jemalloc:profiled");
    }

    #[test]
    fn advice_for_an_engine_that_does_not_answer() {
        let denied = "permission denied while trying to connect to the Docker daemon socket at unix:///var/run/docker.sock";
        assert!(engine_advice(denied).contains("`docker` group"));
        let down = "Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?";
        let a = engine_advice(down);
        assert!(
            a.contains("systemctl start docker") && a.contains("DOCKER_HOST"),
            "{a}"
        );
    }

    #[test]
    fn state_of_an_oom_killed_container() {
        let v: Value = serde_json::json!([{"State": {"Status": "exited", "Running": false,
            "OOMKilled": true, "ExitCode": 137, "Pid": 0}}]);
        assert_eq!(
            parse_state(&v),
            Some(ContainerState {
                running: false,
                oom_killed: true,
                exit_code: 137
            })
        );
        assert_eq!(parse_state(&serde_json::json!([])), None);
    }
}
