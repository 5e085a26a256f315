#!/usr/bin/env bash
# The owner's wrappers at rest: a snapshot through `sync --until-idle` (release binaries, one
# reference cloud over plain HTTP, a fresh SQLite replica each run) with no owner rules, with
# a delete mode and with a column rule that name a table the tenant does not have. The latter
# two put `Retaining` or `Projecting` in the path with nothing to do, so their difference to
# "none" is what the wrappers cost when they pass a batch through. Runs rotate the order.
#
#   ROWS=50000 REPEAT=3 perf/owner_passthrough.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet --bin dbmirror --bin dbmirror-cloud
PERF_BIN=target/release
# shellcheck source=perf/lib.sh
source perf/lib.sh
ROWS="${ROWS:-50000}"
REPEAT="${REPEAT:-3}"
work="$(mktemp -d)"
trap 'kill "$CLOUD_PID" 2>/dev/null; rm -rf "$work"' EXIT
start_cloud "$work/cloud" --http --rows "$ROWS"
declare -A settings=(
  [none]='{"MaxPollTimeSeconds":1}'
  [modes]='{"MaxPollTimeSeconds":1,"DeleteModes":{"crm7.not_a_table":"Soft"}}'
  [columns]='{"MaxPollTimeSeconds":1,"Columns":{"crm7.not_a_table":{"Exclude":["x"]}}}'
)
orders=("none modes columns" "columns none modes" "modes columns none")
n=0
for rep in $(seq 1 "$REPEAT"); do
  for label in ${orders[$(( (rep - 1) % 3 ))]}; do
    n=$((n + 1))
    dir="$work/i$n"
    provision "$PERF_BIN/dbmirror" "$dir" "Data Source=$dir/replica.db" "own$n" "${settings[$label]}"
    start="$(date +%s.%N)"
    "$PERF_BIN/dbmirror" sync --until-idle --instance "$dir" >/dev/null 2>&1
    printf '%s\t%s\t%ss\t%s records\n' "$rep" "$label" "$(seconds_since "$start")" "$((ROWS * 20))"
  done
done
