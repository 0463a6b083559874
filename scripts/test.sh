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
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(fuse3 openssl curl ca-certificates procps build-essential pkg-config musl-tools python3)
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

exec cargo test --workspace --locked "$@"
