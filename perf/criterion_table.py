#!/usr/bin/env python3
"""Summarises criterion results as Markdown tables.

Usage: criterion_table.py TARGET_DIR decode|ingest|steady

Reads target/criterion/<group>/<function>/<param>/new/{estimates,benchmark}.json (medians).
- decode: the benchmark parameter is the total input bytes; prints events/s, MB/s, the
  zero-copy decoder's ratio to the serde_json baseline, and its share of simd-json's bare
  parse of the same lines (`simd_tape_only`, the floor under any simd-json decoder).
- ingest: prints rows/s of the pipeline, the row-by-row applier and the raw insert limit,
  the pipeline's speed-up over row-by-row and its share of the raw limit.
- steady: the same for changes into existing rows; every `raw_*` variant (one per statement
  shape) is printed, and the raw limit is the fastest of them."""
import json
import os
import sys

root, kind = sys.argv[1], sys.argv[2]
rows = {}
for dirpath, _, files in os.walk(root):
    if "estimates.json" not in files or not dirpath.endswith(os.sep + "new"):
        continue
    bench = json.load(open(os.path.join(dirpath, "benchmark.json")))
    if not bench["group_id"].startswith(kind + "/"):
        continue
    seconds = json.load(open(os.path.join(dirpath, "estimates.json")))["median"]["point_estimate"] / 1e9
    elements = bench["throughput"]["Elements"]
    rows.setdefault(bench["group_id"], {})[bench["function_id"]] = (elements / seconds, int(bench["value_str"]), elements)

if kind == "decode":
    print("| workload | bytes/event | zero-copy events/s | zero-copy MB/s | serde_json events/s | serde_json MB/s | ratio | tape only MB/s | zero-copy share of tape only |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for group in sorted(rows):
        r = rows[group]
        if "simd_zero_copy" not in r or "serde_json_value" not in r:
            continue
        (ours, total, n), (base, _, _) = r["simd_zero_copy"], r["serde_json_value"]
        mb = lambda rate: rate * total / n / 1e6
        tape = r.get("simd_tape_only", (None,))[0]
        floor = f"{mb(tape):,.0f} | {ours / tape:.0%}" if tape else "- | -"
        print(f"| {group.split('/', 1)[1]} | {total // n} | {ours:,.0f} | {mb(ours):,.0f} | {base:,.0f} | {mb(base):,.0f} | {ours / base:.1f}x | {floor} |")
else:
    print("| workload | variant | rows/s | vs row-by-row | share of raw limit |")
    print("|---|---|---:|---:|---:|")
    for group in sorted(rows):
        r = rows[group]
        raws = [v for v in r if v.startswith("raw_")]
        if "row_by_row" not in r or not raws:
            continue
        naive, raw = r["row_by_row"][0], max(r[v][0] for v in raws)
        order = ["pipeline", "pipeline_2_threads", "stage_decode_coalesce", "row_by_row"] + sorted(raws)
        for variant in order:
            if variant in r:
                rate = r[variant][0]
                print(f"| {group.split('/', 1)[1]} | {variant} | {rate:,.0f} | {rate / naive:.1f}x | {rate / raw:.0%} |")
