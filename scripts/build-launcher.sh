#!/usr/bin/env bash
# Builds the static `veil-launcher` (decision 24) and prints the path of the binary.
#
#   scripts/build-launcher.sh TARGET_DIR
#
# `crates/veil/build.rs` runs this for every build of `veil` (so `cargo run` and `cargo test`
# need no extra step), and `.ci/run` runs it from a second checkout to check that the bytes are
# reproducible: the same source and toolchain give the same launcher, wherever they lie, so
# anyone can rebuild a release and check the measurement that policies pin.
#
# Target: x86_64-unknown-linux-musl (rustup target + Debian musl-tools). When either is missing,
# glibc with +crt-static is used instead and a warning says so (that build is static but not
# reproducible across machines, and its name resolution needs the host's NSS modules).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd -P)
target_dir=${1:?usage: scripts/build-launcher.sh TARGET_DIR}
mkdir -p "$target_dir"
target_dir=$(cd "$target_dir" && pwd -P)
cargo=${CARGO:-cargo}
rustc=${RUSTC:-rustc}
cargo_home=${CARGO_HOME:-$HOME/.cargo}

triple=x86_64-unknown-linux-musl
sysroot=$("$rustc" --print sysroot)
if [ ! -d "$sysroot/lib/rustlib/$triple/lib" ] || ! command -v musl-gcc >/dev/null 2>&1; then
  triple=x86_64-unknown-linux-gnu
  echo "warning: the Rust target x86_64-unknown-linux-musl or musl-gcc (Debian musl-tools) is missing: building the launcher with glibc +crt-static" >&2
fi

# Paths must not reach the binary: source, registry and build directories are remapped.
remap="--remap-path-prefix=$root=/veil --remap-path-prefix=$cargo_home=/cargo --remap-path-prefix=$target_dir=/target"
export RUSTFLAGS="-C target-feature=+crt-static $remap"
cflags="-ffile-prefix-map=$root=/veil -ffile-prefix-map=$cargo_home=/cargo -ffile-prefix-map=$target_dir=/target"
export "CFLAGS_${triple//-/_}=$cflags"
export "CXXFLAGS_${triple//-/_}=$cflags"
export SOURCE_DATE_EPOCH=0
# aws-lc seeds its DRBG from the kernel (getrandom) only: its CPU-jitter entropy source costs
# ~38 ms at every start (measured with strace/`veil bench attest`), which the launcher pays on
# every workload start. The kernel's entropy is what every other TLS client on the node uses.
export AWS_LC_SYS_NO_JITTER_ENTROPY=1

"$cargo" build --quiet --manifest-path "$root/Cargo.toml" --locked \
  -p veil-launcher --features bin --bin veil-launcher \
  --target "$triple" --profile launcher --target-dir "$target_dir"
echo "$target_dir/$triple/launcher/veil-launcher"
