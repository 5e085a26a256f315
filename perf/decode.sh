#!/usr/bin/env bash
# Runs the decode benchmark and writes the side-by-side table (ours vs the serde_json
# baseline) to stdout in Markdown. Usage: perf/decode.sh [extra criterion args]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo bench --bench decode -- "$@" >&2
python3 perf/criterion_table.py target/criterion decode
