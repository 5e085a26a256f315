#!/usr/bin/env bash
# How fast the reference cloud generates source changes at a realistic table size: starts
# `dbmirror-cloud serve --in-memory --http` with ROWS rows per table (20 tables), times
# `action changes --count COUNT`, and prints changes per second. Give a second binary as
# BASELINE=path/to/dbmirror-cloud to measure both in one run, side by side.
# Usage: ROWS=50000 COUNT=100000 perf/cloud_changes.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS="${ROWS:-50000}"
COUNT="${COUNT:-100000}"
cargo build --release --bin dbmirror-cloud >&2
ours="target/release/dbmirror-cloud"

measure() {
  local bin="$1" count="$2" log url start end
  log="$(mktemp)"
  "$bin" serve --in-memory --http --listen 127.0.0.1:0 --admin-token perf --rows "$ROWS" >"$log" 2>/dev/null &
  local pid=$!
  until url="$(sed -n 's/^dbmirror-cloud listening on //p' "$log")" && [ -n "$url" ]; do sleep 0.2; done
  start="$(date +%s.%N)"
  "$bin" action --url "$url" --admin-token perf changes --count "$count" >/dev/null
  end="$(date +%s.%N)"
  kill "$pid"; wait "$pid" 2>/dev/null || true
  rm -f "$log"
  python3 -c "import sys; s=float(sys.argv[2])-float(sys.argv[1]); print(f'{int(sys.argv[3])/s:,.0f} changes/s ({int(sys.argv[3]):,} in {s:.2f} s)')" "$start" "$end" "$count"
}

echo "| cloud | rows per table | changes/s |"
echo "|---|---:|---|"
echo "| ours | $ROWS | $(measure "$ours" "$COUNT") |"
if [ -n "${BASELINE:-}" ]; then
  echo "| baseline ($BASELINE) | $ROWS | $(measure "$BASELINE" "${BASELINE_COUNT:-$COUNT}") |"
fi
