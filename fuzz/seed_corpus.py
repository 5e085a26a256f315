#!/usr/bin/env python3
"""Rebuilds fuzz/corpus/ from the test fixtures: every record line seeds decode_record, and
every schema-history line paired with event lines seeds decode_schema_history.
Run from the repository root: python3 fuzz/seed_corpus.py"""
import glob
import hashlib

lines = []
for path in sorted(glob.glob("tests/fixtures/**/*.jsonl", recursive=True)):
    if path.endswith(".expected.jsonl"):
        continue
    lines += [l for l in open(path, encoding="utf-8").read().split("\n") if l.strip()]


def write(target, data):
    with open(f"fuzz/corpus/{target}/{hashlib.sha1(data).hexdigest()[:16]}", "wb") as f:
        f.write(data)


for line in lines:
    write("decode_record", line.encode())
history = [l for l in lines if "tableChanges" in l]
events = [l for l in lines if "tableChanges" not in l]
for h in history:
    for e in events[:6]:
        write("decode_schema_history", (h + "\n" + e).encode())
