#!/usr/bin/env bash
# Every benchmark in one command: builds the release binaries, installs the reference tools
# (prometheus-node-exporter, collectd, Mosquitto) without leaving them running as services,
# runs each benchmark beside its reference and rewrites docs/benchmarks.md.
#
#   bench/run.sh                  everything (about 20 minutes on 2 cores)
#   bench/run.sh --quick          shorter windows and fewer samples (about 10 minutes)
#   bench/run.sh --only buffer    one group, or several: --only footprint,ingest
#                                 (footprint, buffer, ingest, alerts, commands, scale,
#                                 postgres, cluster)
#   bench/run.sh --no-build       use the binaries already in target/release
#
# Results of each group are kept in target/bench-results/, so running one group rewrites the
# document with that group's new figures and the others' as the document shows them (or as
# saved, when a saved result is newer; each says its date). Paths in the document are relative
# to the repository; the run's temporary directory shows as $BENCH_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."

args=()
build=1
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) args+=(--quick) ;;
        --only) [ $# -ge 2 ] || { echo "--only needs a group" >&2; exit 64; }; args+=(--only "$2"); shift ;;
        --only=*) args+=(--only "${1#--only=}") ;;
        --no-build) build=0 ;;
        -h | --help) sed -n '2,15p' "$0"; exit 0 ;;
        *) echo "unknown option: $1 (see --help)" >&2; exit 64 ;;
    esac
    shift
done

step() { echo "== $* ($SECONDS s)" >&2; }

services=(prometheus-node-exporter collectd mosquitto)

stop_services() {
    # We start each tool ourselves, with our own config on free loopback ports.
    if command -v systemctl > /dev/null 2>&1 && [ -d /run/systemd/system ]; then
        systemctl disable --now "${services[@]}" > /dev/null 2>&1 || true
    fi
    for s in "${services[@]}"; do
        if [ -x "/etc/init.d/$s" ]; then
            "/etc/init.d/$s" stop > /dev/null 2>&1 || true
            update-rc.d "$s" disable > /dev/null 2>&1 || true
        fi
    done
}

need=()
command -v prometheus-node-exporter > /dev/null 2>&1 || need+=(prometheus-node-exporter)
[ -x /usr/sbin/collectd ] || need+=(collectd)
[ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
command -v mosquitto_pub > /dev/null 2>&1 || need+=(mosquitto-clients)
# the postgres group makes a throwaway cluster of its own on a free port (a system cluster
# may keep running)
[ -x /usr/lib/postgresql/15/bin/initdb ] || need+=(postgresql)
if [ ${#need[@]} -gt 0 ]; then
    step "installing ${need[*]}"
    if [ "$(id -u)" != 0 ]; then
        echo "run as root, or install first: apt-get install -y ${need[*]}" >&2
        exit 1
    fi
    # No service may start during the install: a policy-rc.d that says no (ours only if none).
    own_policy=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        own_policy=1
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"
    [ "$own_policy" = 0 ] || rm -f /usr/sbin/policy-rc.d
fi
stop_services

# 5,000 simulated machines: one descriptor per mTLS connection in the server.
ulimit -n 65536 2> /dev/null || ulimit -n "$(ulimit -Hn)" 2> /dev/null || true
step "open-file limit $(ulimit -n)"

if [ "$build" = 1 ]; then
    step "cargo build --release --bins (fleet-server, rvm-sim, rvm-bench...; LTO, one codegen unit: several minutes)"
    cargo build --release --bins
    step "cargo build --release -p rvm-agent (the agent as it ships: its own feature set)"
    cargo build --release -p rvm-agent
fi
# rvm-sim: the simulated machines of the alerts, commands and scale benchmarks
for b in fleet-server rvm-agent rvm-sim rvm-bench; do
    [ -x "target/release/$b" ] || { echo "target/release/$b is missing (drop --no-build)" >&2; exit 1; }
done

bench_pid=
cleanup() {
    if [ -n "$bench_pid" ]; then
        kill "$bench_pid" 2> /dev/null || true
        wait "$bench_pid" 2> /dev/null || true
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

step "rvm-bench run ${args[*]}"
# rvm-bench kills every process it started when it ends (and they die with it if killed).
target/release/rvm-bench run "${args[@]}" --invoked-as bench/run.sh &
bench_pid=$!
status=0
wait "$bench_pid" || status=$?
bench_pid=
step "done (exit $status): docs/benchmarks.md"
exit "$status"
