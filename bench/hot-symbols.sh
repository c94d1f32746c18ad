#!/usr/bin/env bash
# Regenerates agent/hot-symbols.txt, the functions rvm-agent runs in its steady state, which
# agent/build.rs links first and together (see bench/src/hot.rs for why).
#
#   bench/hot-symbols.sh           builds, profiles the agent for 40 s, writes the list
#   bench/hot-symbols.sh --check   checks the release agent already built: how many listed
#                                  functions it has and how close together (CI runs this)
#
# It runs the footprint bench with the agent under callgrind (valgrind), zeroes the profile
# once the agent is past its start (20 s) and dumps it 40 s later, then keeps the functions of
# the agent binary that ran. Rebuild afterwards (cargo build --release) to link in the new order.
set -euo pipefail
cd "$(dirname "$0")/.."
target=${CARGO_TARGET_DIR:-target}

if [ "${1:-}" = --check ]; then
    agent="$target/release/rvm-agent"
    [ -x "$agent" ] || { echo "$agent is missing: cargo build --release -p rvm-agent" >&2; exit 1; }
    listed=$(grep -vc '^#' agent/hot-symbols.txt)
    # address and size of each listed function found in the binary's symbol table
    found=$(nm -S --defined-only "$agent" | awk 'NR == FNR { if ($0 !~ /^#/) want[$1] = 1; next }
        NF == 4 && ($4 in want) { print $1, $2 }' agent/hot-symbols.txt - | sort)
    n=0 lo= hi=0 bytes=0
    while read -r a s; do
        [ -n "$a" ] || continue
        n=$((n + 1)); bytes=$((bytes + 16#$s))
        [ -n "$lo" ] || lo=$((16#$a))
        end=$((16#$a + 16#$s)); [ "$end" -le "$hi" ] || hi=$end
    done <<< "$found"
    span=$(( n > 0 ? (hi - lo) / 1024 : 0 ))
    echo "link order: $n of $listed listed functions in $agent, $((bytes / 1024)) KiB of code within $span KiB"
    # all of them, placed together: the order was applied and the list matches this build
    if [ $((n * 2)) -lt "$listed" ]; then
        echo "fewer than half found: the list is stale for this toolchain or these dependencies;" \
            "regenerate it (bench/hot-symbols.sh)" >&2
        exit 1
    fi
    if [ "$span" -gt $((bytes / 1024 * 2 + 64)) ]; then
        echo "the listed functions are spread over $span KiB: the link order was not applied" \
            "(agent/build.rs; RVM_AGENT_SYMBOL_ORDER=0 or a linker other than lld?)" >&2
        exit 1
    fi
    exit 0
fi

command -v valgrind > /dev/null 2>&1 || {
    echo "needs valgrind: apt-get install -y valgrind" >&2
    exit 1
}
cargo build --release --bins
# the agent as it ships (its own features; in a workspace build it gets the features other
# packages ask of shared crates, and other names for their generic functions)
cargo build --release -p rvm-agent
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/bins" "$work/cg"
cp "$target/release/fleet-server" "$work/bins/"
cat > "$work/bins/rvm-agent" << WRAP
#!/bin/sh
exec valgrind --tool=callgrind --demangle=no --callgrind-out-file=$work/cg/out.%p $(realpath "$target")/release/rvm-agent "\$@"
WRAP
chmod +x "$work/bins/rvm-agent"

"$target/release/rvm-bench" run --only footprint --bins "$work/bins" --results "$work/results" \
    --doc "$work/doc.md" > "$work/bench.log" 2>&1 &
bench=$!
pid=
for _ in $(seq 1 60); do
    pid=$(pgrep -f "callgrind-out-file=$work/cg" | head -1 || true)
    [ -n "$pid" ] && break
    sleep 1
done
[ -n "$pid" ] || { cat "$work/bench.log" >&2; echo "the agent did not start under callgrind" >&2; exit 1; }
sleep 20
callgrind_control -z "$pid" > /dev/null
sleep 40
callgrind_control -d "$pid" > /dev/null
sleep 2
wait "$bench" || true
profile=$(ls "$work/cg/out.$pid".* | head -1)
"$target/release/rvm-bench" hot-symbols --callgrind "$profile" --binary "$target/release/rvm-agent" \
    --out agent/hot-symbols.txt
