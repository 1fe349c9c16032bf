//! One kind cluster per `e2e` run ([`KindSession`]): it is created from `ci/kind.yaml` or
//! reused, its kubeconfig is written into the run's work directory (0600, never into the
//! report), the image's docker-archive is loaded once, and the cluster is deleted at the end
//! when this run created it.

use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use xshell::{cmd, Shell};

use super::tools::{require_tools, KIND_CONFIG};
use crate::progress::{self, Step};
use crate::project;
use crate::teardown;

/// The kind cluster of one `e2e` run, shared by its allocators: it is created from
/// [`KIND_CONFIG`] unless a cluster of that name exists, its kubeconfig is written into the
/// run's private work directory (every kubectl call names it; mode 0600, and never into the
/// report, which a workflow uploads), and the image is loaded into its node once.
/// Dropping it deletes the cluster only if this run created it (and not `keep`).
pub struct KindSession {
    pub cluster: String,
    pub kubeconfig: PathBuf,
    /// The image's name on the node.
    pub image: String,
    created: bool,
    keep: bool,
    _teardown: Option<teardown::Guard>,
}

impl KindSession {
    pub fn start(
        cluster: &str,
        archive: &Path,
        image: &str,
        dir: &Path,
        keep: bool,
    ) -> Result<KindSession> {
        require_tools()?;
        let sh = Shell::new()?;
        let name = cluster;
        let kubeconfig = std::path::absolute(dir.join("kubeconfig"))?;
        let clusters = cmd!(sh, "kind get clusters")
            .quiet()
            .read()
            .context("kind get clusters")?;
        let created = !clusters.lines().any(|l| l.trim() == name);
        let teardown = (created && !keep).then(|| {
            let name = name.to_string();
            teardown::on_interrupt(format!("kind cluster {name}"), move || {
                if let Ok(sh) = Shell::new() {
                    let _ = cmd!(sh, "kind delete cluster --name {name}").quiet().run();
                }
            })
        });
        if created {
            let config = project::root().join(KIND_CONFIG);
            let step = Step::start(format!("creating kind cluster {name} from {KIND_CONFIG}"));
            // --kubeconfig: the user's own kubeconfig is left alone.
            cmd!(
                sh,
                "kind create cluster --name {name} --config {config} --kubeconfig {kubeconfig} --wait 180s"
            )
            .run()
            .with_context(|| format!("kind create cluster --name {name}"))?;
            step.done("");
        } else {
            progress::note(format!("reusing kind cluster {name}"));
        }
        let session = KindSession {
            cluster: name.to_string(),
            kubeconfig: kubeconfig.clone(),
            image: image.to_string(),
            created,
            keep,
            _teardown: teardown,
        };
        let text = cmd!(sh, "kind get kubeconfig --name {name}")
            .quiet()
            .read()
            .with_context(|| format!("kind get kubeconfig --name {name}"))?;
        // The cluster's admin credentials are readable by this user only.
        {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&kubeconfig)
                .and_then(|mut f| f.write_all((text + "\n").as_bytes()))
                .with_context(|| format!("writing {}", kubeconfig.display()))?;
        }
        let step = Step::start(format!("loading {image} into kind cluster {name}"));
        cmd!(sh, "kind load image-archive {archive} --name {name}")
            .quiet()
            .run()
            .with_context(|| format!("kind load image-archive {}", archive.display()))?;
        step.done("");
        Ok(session)
    }
}

impl Drop for KindSession {
    fn drop(&mut self) {
        let name = &self.cluster;
        if self.created && !self.keep {
            if let Ok(sh) = Shell::new() {
                let _ = cmd!(sh, "kind delete cluster --name {name}").quiet().run();
            }
        } else if self.created {
            progress::note(format!(
                "kept: kind cluster {name} (`kind delete cluster --name {name}` removes it)"
            ));
        }
    }
}
