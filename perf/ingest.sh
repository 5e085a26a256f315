#!/usr/bin/env bash
# Runs the snapshot-ingest benchmark (SQLite) and prints the side-by-side table in Markdown.
# Usage: perf/ingest.sh [extra criterion args]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo bench --bench ingest -- "$@" >&2
python3 perf/criterion_table.py target/criterion ingest
