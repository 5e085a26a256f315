#!/usr/bin/env bash
# Runs the snapshot-ingest benchmarks (SQLite, and PostgreSQL on a private cluster the bench
# starts, or DBMIRROR_PG_URL) and prints the side-by-side table in Markdown.
# Usage: perf/ingest.sh [extra criterion args]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo bench --bench ingest -- "$@" >&2
cargo bench --bench ingest_postgres -- "$@" >&2
python3 perf/criterion_table.py target/criterion ingest
