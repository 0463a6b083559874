#!/usr/bin/env bash
# The README's test command: installs what the tests need (Debian packages, as root), then runs
# every test of the workspace. `.ci/run` calls this same script. Extra arguments go to
# `cargo test` (e.g. `scripts/test.sh -p veil-shield`).
#
# What the tests need beyond the Rust toolchain:
#   fuse3        fusermount3, for the FUSE mounts of volumes (and /dev/fuse, as root)
#   openssl      the REST tests make client certificates the way a SCONE user would
#   curl         the REST tests call the CAS API the way SCONE automation does
#   procps       kill(1), used to stop servers with SIGTERM
#   build-essential, pkg-config: C code of aws-lc-sys
#   musl-tools   musl-gcc, for the static veil-launcher (decision 24; with the rustup target
#                x86_64-unknown-linux-musl, added below when rustup is there)
#   python3      real programs nobody here wrote run under the launcher and on volumes
#   git          another one: a repository is created, committed to and checked on a volume
#   skopeo, umoci, busybox-static, docker-registry: the image converter's tests build images
#                (FROM scratch with busybox), copy them through a local registry on 127.0.0.1
#                and unpack what `veil sconify-image` produced
#   python3-venv the Helm chart test renders and validates the generated chart with the PyPI
#                packages helm-python-sdk and kubernetes-validate, installed below into a venv
#                (target/test-venv; VEIL_HELM_PYTHON points the test at its python)
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(fuse3 openssl curl ca-certificates procps build-essential pkg-config musl-tools python3
  python3-venv git skopeo umoci busybox-static docker-registry)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "scripts/test.sh: missing Debian packages: ${missing[*]} (run as root to install them)" >&2
    exit 1
  fi
  echo "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if command -v rustup >/dev/null 2>&1; then
  rustup target list --installed | grep -x x86_64-unknown-linux-musl >/dev/null || rustup target add x86_64-unknown-linux-musl
fi

# The chart test's Python packages (PyPI is reachable; nothing else is needed at run time).
venv="${CARGO_TARGET_DIR:-target}/test-venv"
if [ -z "${VEIL_HELM_PYTHON:-}" ]; then
  if ! "$venv/bin/python" -c 'import helm_python, kubernetes_validate' >/dev/null 2>&1; then
    /usr/bin/python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check helm-python-sdk kubernetes-validate
  fi
  VEIL_HELM_PYTHON="$(cd "$venv/bin" && pwd)/python"
  export VEIL_HELM_PYTHON
fi

exec cargo test --workspace --locked "$@"
