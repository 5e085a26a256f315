#!/usr/bin/env bash
# The initial snapshot end to end with the release binaries, over HTTPS (the default, with the
# cloud's pinned self-signed certificate) and over plain HTTP, in one run: a reference cloud
# with ROWS rows in each of its 20 tables, a client provisioned through the device grant (the
# approval posted as a browser would), `sync --until-idle` into SQLite, timed. Prints records/s
# for each and the ratio. BASELINE=path/to/another/dbmirror measures that client too, in the
# same run (each sync against a fresh cloud of its own), for a side-by-side comparison.
# Usage: ROWS=50000 [BASELINE=../old/target/release/dbmirror] perf/snapshot_http.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS="${ROWS:-50000}"
cargo build --release --bin dbmirror --bin dbmirror-cloud >&2
bin="$PWD/target/release"
work="$(mktemp -d)"
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

source perf/lib.sh
PERF_BIN="$bin"

run() { # $1 = https|http, $2 = the client binary, $3 = its label
  local mode="$1" client="$2" label="$3" dir="$work/$3-$1" flags=() start end records
  [ "$mode" = http ] && flags+=(--http)
  start_cloud "$dir" "${flags[@]}" --rows "$ROWS"
  provision "$client" "$dir/instance" "Data Source=$dir/instance/replica.db" "perf$mode"
  start="$(date +%s.%N)"
  "$client" sync --until-idle --instance "$dir/instance" >"$dir/sync.log" 2>&1
  end="$(date +%s.%N)"
  records="$(sed -n 's/^caught up: \([0-9]*\) records.*/\1/p' "$dir/sync.log")"
  kill "$CLOUD_PID"; wait "$CLOUD_PID" 2>/dev/null || true
  python3 -c "import sys; s=float(sys.argv[2])-float(sys.argv[1]); r=int(sys.argv[3]); print(f'{sys.argv[4]} {r} {s:.2f} {r/s:.0f}')" \
    "$start" "$end" "${records:-0}" "$label-$mode"
}

clients=("$bin/dbmirror:ours")
[ -n "${BASELINE:-}" ] && clients+=("$BASELINE:baseline")
echo "| client/transport | records | seconds | records/s |"
echo "|---|---:|---:|---:|"
for entry in "${clients[@]}"; do
  client="${entry%:*}" label="${entry##*:}"
  https="$(run https "$client" "$label")"
  http="$(run http "$client" "$label")"
  for line in "$https" "$http"; do
    read -r mode records secs rate <<<"$line"
    echo "| $mode | $records | $secs | $rate |"
  done
  python3 -c "import sys; print(f'| {sys.argv[3]}: HTTPS / HTTP time | | {float(sys.argv[1])/float(sys.argv[2]):.2f}x | |')" \
    "$(echo "$https" | cut -d' ' -f3)" "$(echo "$http" | cut -d' ' -f3)" "$label"
done
