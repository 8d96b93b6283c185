#!/usr/bin/env python3
"""Markdown tables from voice-bench JSON lines (bench/run.sh's output), for BENCHMARKS.md.

    python3 bench/summarize.py bench/results/after.jsonl [more.jsonl ...]

Every run is listed with the 1-minute load average before/after it; relay, rooms and fanout
also get the median over repeats and (relay) the ratios to the Node baseline and the echo
ceiling.
"""
import json
import statistics
import sys


def load(paths):
    out = []
    for p in paths:
        with open(p) as f:
            out += [json.loads(line) for line in f if line.strip()]
    return out


def ms(us):
    return f"{us / 1000:.1f}"


def idle(rs):
    print("| target | connections | server RSS held (MiB) | KiB / connection | projected at 50 000 (MiB) | setup (conn/s) | request p50 / p99 (ms) | load before/after |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for r in rs:
        e = r["extra"]
        print(f"| {r['target']} | {e['connections']} | {e['serverRssHeldMib']:.1f} | {e['serverKibPerConnection']:.1f} | "
              f"{e['projectedMibAt50k']:.0f} | {r['throughput']:.0f} | {ms(r['latency']['p50_us'])} / {ms(r['latency']['p99_us'])} | "
              f"{r['load'][0]:.1f}/{r['load'][1]:.1f} |")


def each(r):
    v = r.get("server_cpu_us_each")
    if v is not None:
        return v
    if r["throughput"] and "secs" in r["params"]:
        return r["server"]["cpu_secs"] / (r["throughput"] * r["params"]["secs"]) * 1e6
    return float("nan")


def runs(rs, unit):
    print(f"| run | pinning | target | {unit} | p50 (ms) | p99 (ms) | max (ms) | server CPU % | server CPU µs each | generator CPU % | server RSS (MiB) | errors | load before/after |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for i, r in enumerate(rs):
        per = each(r)
        print(f"| {i + 1} | {r.get('pinning', '')} | {r['target']} | {r['throughput']:.0f} | {ms(r['latency']['p50_us'])} | {ms(r['latency']['p99_us'])} | "
              f"{ms(r['latency']['max_us'])} | {r['server']['cpu_pct']:.0f} | {per:.1f} | {r['generator_cpu_pct']:.0f} | "
              f"{r['server']['rss_end_mib']:.1f} | {r['errors']} | {r['load'][0]:.1f}/{r['load'][1]:.1f} |")


def medians(rs):
    targets = sorted({(r.get("pinning", ""), r["target"]) for r in rs})
    med = {}
    print("| pinning | target | runs | median throughput | median server CPU µs each (user) | median p50 (ms) | median p99 (ms) | median max (ms) |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for p, t in targets:
        ts = [r for r in rs if r["target"] == t and r.get("pinning", "") == p]
        m = {k: statistics.median(f(r) for r in ts) for k, f in {
            "thr": lambda r: r["throughput"],
            "each": each,
            "user": lambda r: each(r) * r["server"].get("user_cpu_secs", float("nan")) / max(r["server"]["cpu_secs"], 1e-9),
            "p50": lambda r: r["latency"]["p50_us"],
            "p99": lambda r: r["latency"]["p99_us"],
            "max": lambda r: r["latency"]["max_us"],
        }.items()}
        med[(p, t)] = m
        print(f"| {p} | {t} | {len(ts)} | {m['thr']:.0f} {ts[0]['unit']} | {m['each']:.1f} ({m['user']:.1f}) | {ms(m['p50'])} | {ms(m['p99'])} | {ms(m['max'])} |")
    return med


def main():
    rs = load(sys.argv[1:])
    by = {}
    for r in rs:
        by.setdefault(r["scenario"], []).append(r)
    if "idle" in by:
        print("\n### idle\n")
        idle(by["idle"])
    for s, unit in [("rooms", "ops/s"), ("relay", "msg/s"), ("fanout", "members/s")]:
        if s not in by:
            continue
        print(f"\n### {s}\n")
        runs(by[s], unit)
        print()
        med = medians(by[s])
        if s == "relay":
            for p in sorted({k[0] for k in med}):
                n = med.get((p, "node"))
                for vt in ("voice", "voice-before"):
                    v = med.get((p, vt))
                    if not (v and n):
                        continue
                    print(f"\n{p or 'relay'}: {vt} / node: CPU per signal {v['each'] / n['each']:.2f}x, p99 {v['p99'] / n['p99']:.2f}x, "
                          f"throughput {v['thr'] / n['thr']:.2f}x (lower is better for the first two)", end="")
                    e = med.get((p, "echo"))
                    if e:
                        print(f"; {vt} / echo throughput {v['thr'] / e['thr']:.2f}", end="")
                print()
        if s == "fanout":
            for r in by[s]:
                e = r["extra"]
                print(f"\nrun: all delivered p50 {ms(e['allDeliveredPerRun']['p50_us'])} ms, max {ms(e['allDeliveredPerRun']['max_us'])} ms; "
                      f"per member p50 {ms(e['perMemberDelivery']['p50_us'])} ms; createVoiceRoom reply p50 {ms(e['createVoiceRoomReply']['p50_us'])} ms", end="")
            print()
    if "rooms" in by:
        print("\nrooms, per action (last run):\n")
        print("| action | n | p50 (ms) | p99 (ms) |")
        print("|---|---:|---:|---:|")
        for k, v in by["rooms"][-1]["extra"]["byAction"].items():
            print(f"| {k} | {v['n']} | {ms(v['p50_us'])} | {ms(v['p99_us'])} |")


if __name__ == "__main__":
    main()
