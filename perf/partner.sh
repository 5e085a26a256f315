#!/usr/bin/env bash
# Partner mode, tenants per host: one `dbmirror sync` partner process (release build, 4
# workers) mirrors every tenant of a reference cloud (20 small tables each) into one SQLite
# file per tenant. For each case it reports the time until every tenant is mirrored, then —
# over a steady window with RATE changes/s per tenant — the process's CPU (share of one core)
# and peak RSS, and the largest lag `status` reports.
#
#   perf/partner.sh                 # the two cases of perf/RESULTS.md: 200 idle, 50 × 20/s
#   CASES="100:5" WINDOW=20 perf/partner.sh
#   PERF_BIN=/path/to/other/build perf/partner.sh   # the same cases with another build
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${PERF_BIN:-}" ]; then
  cargo build --release --quiet --bin dbmirror --bin dbmirror-cloud
  PERF_BIN=target/release
fi
# shellcheck source=perf/lib.sh
source perf/lib.sh
CASES="${CASES:-200:0 50:20}"
WINDOW="${WINDOW:-30}"
TICK="$(getconf CLK_TCK)"

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
status_json() { ACME_SECRET=pw "$PERF_BIN/dbmirror" status --json --instance "$1" 2>/dev/null; }

run_case() {
  local tenants="$1" rate="$2" dir
  dir="$(mktemp -d)"
  start_cloud "$dir/cloud" --http --many-tenants "$tenants" --rows 3 --changes-per-sec "$rate" --partner 'acme:pw:*'
  mkdir -p "$dir/instance"
  python3 -c 'import json,sys; print(json.dumps({"Partner": {"Id": "acme", "Secret": "env:ACME_SECRET", "Cloud": sys.argv[1],
    "ServerConnectionString": "Data Source=" + sys.argv[2], "Workers": 4, "PollSeconds": 5, "IdleSeconds": 2,
    "SliceSeconds": 10}, "MaxPollTimeSeconds": 1, "Logging": {"LogLevel": {"Default": "Warning"}}}))' \
    "$CLOUD_URL" "$dir/mirrors" >"$dir/instance/appsettings.json"
  local start pid all=$((tenants + 1))
  start="$(date +%s.%N)"
  ACME_SECRET=pw "$PERF_BIN/dbmirror" sync --instance "$dir/instance" >/dev/null 2>&1 &
  pid=$!
  until status_json "$dir/instance" | python3 -c 'import json,sys; s=json.load(sys.stdin); n=int(sys.argv[1])
sys.exit(0 if len(s) == n and all(t.get("tables") == 20 and t.get("rows", 0) >= 60 for t in s) else 1)' "$all"; do
    sleep 2
  done
  local mirrored ticks0 ticks1 peak=0 rss
  mirrored="$(seconds_since "$start")"
  ticks0="$(cpu_ticks "$pid")"
  for _ in $(seq "$WINDOW"); do
    rss="$(rss_kb "$pid")"; [ "$rss" -gt "$peak" ] && peak="$rss"
    sleep 1
  done
  ticks1="$(cpu_ticks "$pid")"
  local lag
  lag="$(status_json "$dir/instance" | python3 -c 'import json,sys; s=json.load(sys.stdin)
print(max(((t.get("lag") or {}).get("records") or 0) for t in s))')"
  kill "$pid"; wait "$pid" || true
  kill "$CLOUD_PID"; wait "$CLOUD_PID" 2>/dev/null || true
  python3 -c 'import sys; t,r,m,d,tick,w,p,l=sys.argv[1:]; cpu=int(d)/int(tick)/int(w)*100
print(f"| {t} | {r} | {float(m):.1f} s | {cpu:.0f}% | {int(p)/1024:.0f} MB | {l} |")' \
    "$all" "$rate" "$mirrored" "$((ticks1 - ticks0))" "$TICK" "$WINDOW" "$peak" "$lag"
  rm -rf "$dir"
}

echo "| tenants | changes/s per tenant | all mirrored after | CPU over ${WINDOW} s (one core = 100%) | peak RSS | largest lag (records) |"
echo "|---|---|---|---|---|---|"
for c in $CASES; do
  run_case "${c%%:*}" "${c##*:}"
done
