#!/usr/bin/env python3
"""Summarises criterion results for the decode groups as a Markdown table.

Reads target/criterion/<group>/<function>/<bytes>/new/{estimates,benchmark}.json, where the
benchmark id's parameter is the total input bytes, and prints events/s, MB/s and the ratio
of the zero-copy decoder to the serde_json baseline."""
import json
import os
import sys

root, prefix = sys.argv[1], sys.argv[2]
rows = {}
for dirpath, _, files in os.walk(root):
    if "estimates.json" not in files or not dirpath.endswith(os.sep + "new"):
        continue
    bench = json.load(open(os.path.join(dirpath, "benchmark.json")))
    if not bench["group_id"].startswith(prefix + "_") and not bench["group_id"].startswith(prefix + "/"):
        continue
    est = json.load(open(os.path.join(dirpath, "estimates.json")))
    seconds = est["median"]["point_estimate"] / 1e9
    events = bench["throughput"]["Elements"]
    total_bytes = int(bench["value_str"])
    rows.setdefault(bench["group_id"], {})[bench["function_id"]] = (events / seconds, total_bytes / seconds / 1e6, total_bytes // events)

print("| workload | bytes/event | zero-copy events/s | zero-copy MB/s | serde_json events/s | serde_json MB/s | ratio |")
print("|---|---:|---:|---:|---:|---:|---:|")
for group in sorted(rows):
    r = rows[group]
    if "simd_zero_copy" not in r or "serde_json_value" not in r:
        continue
    (oe, om, size), (be, bm, _) = r["simd_zero_copy"], r["serde_json_value"]
    print(f"| {group.split('/', 1)[1]} | {size} | {oe:,.0f} | {om:,.0f} | {be:,.0f} | {bm:,.0f} | {oe / be:.1f}x |")
