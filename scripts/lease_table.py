#!/usr/bin/env python3
"""The table of a run of jitc-lease-bench lines: per concurrency, the medians of the
rounds for jitc and for its peer, side by side, and their ratio.

    lease_table.py FILE PEER_KIND JITC_RATE_HEADER PEER_RATE_HEADER PEER_P99_HEADER
"""
import re
import statistics
import sys

path, peer, jitc_head, peer_head, peer_p99 = sys.argv[1:6]
runs = {}
for line in open(path):
    kind, clients = line.split()[0], int(re.search(r"clients=(\d+)", line).group(1))
    rate = float(re.search(r"rate=([\d.]+)", line).group(1))
    p99 = float(re.search(r"p99=([\d.]+)us", line).group(1))
    runs.setdefault((kind, clients), []).append((rate, p99))
w1, w2 = max(12, len(jitc_head)), max(15, len(peer_head))
print(f"{'clients':>7}  {jitc_head:>{w1}}  {'jitc p99':>9}  {peer_head:>{w2}}  {peer_p99:>9}  ratio")
for clients in sorted({c for _, c in runs}):
    j, p = runs[("jitc", clients)], runs[(peer, clients)]
    jr, jp = statistics.median(r for r, _ in j), statistics.median(q for _, q in j)
    pr, pp = statistics.median(r for r, _ in p), statistics.median(q for _, q in p)
    print(f"{clients:>7}  {jr:>{w1}.0f}  {jp/1000:>7.2f}ms  {pr:>{w2}.0f}  {pp/1000:>7.2f}ms  {jr/pr:5.2f}x")
