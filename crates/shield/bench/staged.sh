#!/usr/bin/env bash
# crates/shield/bench/staged.sh — staged mode throughput: `veil volume create --from` (pack) and
# `veil volume unpack` of a 100 MB tree, on tmpfs, REPS times; prints a markdown table (median).
#
#   VEIL=target/release/veil crates/shield/bench/staged.sh
#
# Environment: VEIL (required), REPS=5, MB=100 (total size), FILES=100 (number of files).
set -euo pipefail
VEIL=${VEIL:?set VEIL to the veil binary}
REPS=${REPS:-5}
MB=${MB:-100}
FILES=${FILES:-100}
W=$(mktemp -d -p /dev/shm)
trap 'rm -rf "$W"' EXIT
[ "$(stat -f -c %T "$W")" = tmpfs ] || { echo "not on tmpfs" >&2; exit 1; }
mkdir -p "$W/plain"
per=$((MB * 1000000 / FILES))
for ((i = 0; i < FILES; i++)); do
    mkdir -p "$W/plain/d$((i % 10))"
    head -c "$per" /dev/urandom >"$W/plain/d$((i % 10))/f$i"
done
bytes=$(du -sb "$W/plain" | cut -f1)
now() { date +%s%N; }
median() { printf '%s\n' "$@" | sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
pack=() unpack=()
for ((r = 1; r <= REPS; r++)); do
    rm -rf "$W/bk" "$W/out"
    t0=$(now)
    out=$("$VEIL" volume create "$W/bk" --from "$W/plain")
    t1=$(now)
    key=$(sed -n 's/^key: //p' <<<"$out")
    tag=$(sed -n 's/^tag: //p' <<<"$out")
    "$VEIL" volume unpack "$W/bk" "$W/out" --key "$key" --tag "$tag"
    t2=$(now)
    cmp -s "$W/plain/d0/f0" "$W/out/d0/f0" || { echo "unpack differs" >&2; exit 1; }
    pack+=("$(awk -v b="$bytes" -v ns=$((t1 - t0)) 'BEGIN { printf "%.0f", b / (ns / 1e9) / 1e6 }')")
    unpack+=("$(awk -v b="$bytes" -v ns=$((t2 - t1)) 'BEGIN { printf "%.0f", b / (ns / 1e9) / 1e6 }')")
    echo "rep $r: pack ${pack[-1]} MB/s, unpack ${unpack[-1]} MB/s" >&2
done
echo "### Staged mode ($((bytes / 1000000)) MB in $FILES files on tmpfs, REPS=$REPS, median; whole process incl. start-up)"
echo
echo "| operation | MB/s | runs |"
echo "|---|---|---|"
echo "| pack (\`veil volume create --from\`) | $(median "${pack[@]}") | ${pack[*]} |"
echo "| unpack (\`veil volume unpack\`, verifies every chunk and root) | $(median "${unpack[@]}") | ${unpack[*]} |"
