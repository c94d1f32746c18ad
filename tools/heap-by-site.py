#!/usr/bin/env python3
"""The fleet server's peak heap by call site, per machine (docs/benchmarks.md, "The server's
memory per machine").

Reads the collapsed stacks that `heaptrack_print -f FILE.zst -F stacks.txt
--flamegraph-cost-type peak` writes (one stack per line, frames root first, `;`-separated,
then the bytes it held at the heap's peak) and sums them into the groups below, each stack
into the first group that claims it. The groups name the owners that matter at fleet scale:
the embedded broker's per-connection state (rmqtt, tokio-util's framing buffers, rustls),
sled (bounded by its cache, not per machine), and the server's own per-machine state.

usage: heap-by-site.py STACKS MACHINES
"""
import collections
import re
import sys

GENERIC = re.compile(
    r"(alloc::|core::|<alloc|_\$LT\$alloc|bytes::|_\$LT\$bytes|tokio::runtime|std::|_RNv|"
    r"start_thread|clone3|hashbrown|__rust)"
)


def has(*needles):
    return lambda f: any(n in x for x in f for n in needles)


GROUPS = [
    # the closure rmqtt spawns per connection allocates the Framed buffers itself (inlined)
    (
        "broker: Framed read + write buffers (tokio-util, 8 KiB each)",
        lambda f: f[-1].startswith("rmqtt::server::listen_tls::_$u7b$$u7b$closure$u7d$$u7d$::_$u7b$"),
    ),
    ("broker: the connection's task (rmqtt's spawned future)", lambda f: f[-1].startswith("rmqtt::server::listen_tls")),
    ("broker: read buffer grown by the MQTT codec", lambda f: any("MqttCodec" in x and "decode" in x for x in f)),
    ("broker: rustls (deframer buffer, connection, keys)", has("rustls", "aws_lc")),
    ("broker: rmqtt sessions, router, hooks", has("rmqtt")),
    ("sled: metrics histograms (allocated zeroed, never touched)", has("sled..metrics")),
    ("sled: page cache and log buffers", lambda f: has("sled::", "sled..")(f) and not has("decode_record")(f)),
    ("fleet: records decoded (latest kept, or in flight)", has("decode_record")),
    ("fleet: flat metric names and values", has("refresh_metrics")),
    ("fleet: the actor's checkpoint (every second)", has("FleetActor::tick")),
    ("fleet: entries, latest record, KPI and other inputs", has("FleetActor::apply", "FleetState")),
    ("ingest: history rows in flight", has("history_row")),
    ("ingest: writer, other", has("ingest::writer")),
    ("alerts and incidents", has("alerts::", "incidents::")),
    ("other", lambda f: True),
]


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    machines = int(sys.argv[2])
    by = collections.Counter()
    total = 0
    for line in open(sys.argv[1]):
        stack, _, cost = line.rstrip().rpartition(" ")
        cost = int(cost)
        total += cost
        frames = [re.sub(r"::h[0-9a-f]{16}", "", x) for x in stack.rstrip(";").split(";")]
        core = [x for x in frames if not GENERIC.match(x)] or ["?"]
        for name, claims in GROUPS:
            if claims(core):
                by[name] += cost
                break
    print(f"peak heap {total / 2**20:.1f} MiB, {total / 1024 / machines:.1f} KiB per machine")
    for name, _ in GROUPS:
        print(f"{by[name] / 1024 / machines:6.2f} KiB  {by[name] / 2**20:6.1f} MiB  {name}")


if __name__ == "__main__":
    main()
