#!/usr/bin/env bash
# Steady state with the release binaries, for SQLite and PostgreSQL (a private cluster started
# here, or DBMIRROR_PG_URL): a reference cloud with ROWS rows per table (20 tables, plain HTTP),
# a provisioned client that has loaded the snapshot, then
#   1. saturation: CATCHUP source changes made while the client is stopped, then timed
#      `sync --until-idle` catching up (changes/s the client sustains when it is the bottleneck);
#   2. fixed rates (RATES, changes/s, each for SECONDS): `sync` running as a service with
#      `--metrics-listen`; at the end its /metrics give the change latency (source commit to
#      replica commit, of each batch's oldest change: an upper bound) as bucket bounds for p50,
#      p99 and the maximum, whether it kept up, and its resident memory.
# Then, in the same run and on the same PostgreSQL, `cargo bench --bench steady`: the pipeline
# in process beside a row-by-row baseline (the JDBC sink's shape) and the raw set-based limit,
# one per statement shape (see benches/steady.rs).
# COMPARE='{"WholeSourceTransactions":false}' runs every target a second time with these
# appsettings keys, labelled `+compare`, in the same run; BENCH=0 skips the bench.
# Usage: ROWS=20000 CATCHUP=200000 RATES="1000 5000" SECONDS_PER_RATE=20 perf/steady.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS="${ROWS:-20000}"
CATCHUP="${CATCHUP:-200000}"
RATES="${RATES:-1000 5000}"
RUN_SECONDS="${SECONDS_PER_RATE:-20}"
cargo build --release --bin dbmirror --bin dbmirror-cloud >&2
PERF_BIN="$PWD/target/release"
source perf/lib.sh
work="$(mktemp -d)"
chmod 755 "$work"
trap 'kill $(jobs -p) 2>/dev/null || true; [ -n "${PG_CTL:-}" ] && $PG_CTL stop >/dev/null 2>&1; rm -rf "$work"' EXIT

# Sets PG_URL (and PG_CTL when it started a cluster, so the exit trap stops it; and
# PG_COMPARE_URL, a second database for COMPARE — not with DBMIRROR_PG_URL).
start_postgres() {
  if [ -n "${DBMIRROR_PG_URL:-}" ]; then PG_URL="$DBMIRROR_PG_URL"; return; fi
  local bin port
  bin="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n1)"
  port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
  mkdir -p "$work/pg" && chown postgres:postgres "$work/pg" 2>/dev/null || true
  local as=()
  [ "$(id -u)" = 0 ] && as=(runuser -u postgres --)
  "${as[@]}" "$bin/initdb" -A trust -U mirror -E UTF8 --no-sync -D "$work/pg/data" >/dev/null
  PG_CTL="${as[*]} $bin/pg_ctl -D $work/pg/data"
  "${as[@]}" "$bin/pg_ctl" -D "$work/pg/data" -l "$work/pg/log" -w \
    -o "-p $port -k $work/pg -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off" start >/dev/null
  "${as[@]}" "$bin/createdb" -h 127.0.0.1 -p "$port" -U mirror replica
  "${as[@]}" "$bin/createdb" -h 127.0.0.1 -p "$port" -U mirror replica_compare
  PG_COMPARE_URL="host=127.0.0.1 port=$port user=mirror dbname=replica_compare"
  PG_URL="host=127.0.0.1 port=$port user=mirror dbname=replica"
}

# histogram QUANTILE METRICS_TEXT: the bucket bound holding that share of the observations.
quantiles() {
  python3 - "$1" <<'PY'
import sys, re
text = open(sys.argv[1]).read()
def histogram(name):
    buckets, count = [], 0
    for line in text.splitlines():
        m = re.match(name + r'_bucket\{.*le="([^"]+)"\} (\S+)', line)
        if m:
            buckets.append((float('inf') if m[1] == '+Inf' else float(m[1]), float(m[2])))
        m = re.match(name + r'_count\S* (\S+)', line)
        if m:
            count = float(m[1])
    def q(share):
        for bound, n in buckets:
            if count and n >= share * count:
                return f"<= {bound:g} s" if bound != float('inf') else "beyond the last bucket"
        return "-"
    return q
latency = histogram('dbmirror_change_latency_seconds')
apply = histogram('dbmirror_batch_apply_seconds')
rss = re.search(r'^process_resident_memory_bytes\S* (\S+)', text, re.M)
applied = re.search(r'^dbmirror_records_applied_total\S* (\S+)', text, re.M)
print(latency(0.5), "|", latency(0.99), "|", latency(1.0), "|", apply(0.5), "|", apply(0.99), "|",
      f"{float(rss[1])/1e6:.0f} MB" if rss else "-", "|", int(float(applied[1])) if applied else 0)
PY
}

# exact SYNC_LOG: percentiles of the change latency from the client's per-batch debug events
# (`dbmirror::latency`): every change counted with its batch's latency (that of the batch's
# oldest change, so an upper bound for the others), over all changes and over batches.
exact() {
  python3 - "$1" <<'PY'
import sys, re
batches = [(int(r), int(l)) for r, l in re.findall(r'records=(\d+) latency_ms=(\d+)', open(sys.argv[1]).read())]
batches = [(r, l) for r, l in batches if r > 0]
if not batches:
    print("- | - | - | - | 0"); sys.exit()
def pct(pairs, share):
    pairs = sorted(pairs, key=lambda p: p[1]); total = sum(r for r, _ in pairs); seen = 0
    for r, l in pairs:
        seen += r
        if seen >= share * total:
            return l
changes = pct(batches, 0.5), pct(batches, 0.99), max(l for _, l in batches)
per_batch = [(1, l) for _, l in batches]
print(f"{changes[0]} ms | {changes[1]} ms | {changes[2]} ms | {pct(per_batch, 0.5)} ms / {pct(per_batch, 0.99)} ms | {len(batches)}")
PY
}

measure() { # $1 = label, $2 = connection string, $3 = extra appsettings keys (JSON)
  local label="$1" conn="$2" dir="$work/$1" start secs
  start_cloud "$dir/cloud" --http --rows "$ROWS"
  provision "$PERF_BIN/dbmirror" "$dir/instance" "$conn" "steady${label//[^a-z]/}" "${3:-{\}}"
  "$PERF_BIN/dbmirror" sync --until-idle --instance "$dir/instance" >/dev/null 2>&1
  cloud_action changes --count "$CATCHUP"
  start="$(date +%s.%N)"
  "$PERF_BIN/dbmirror" sync --until-idle --instance "$dir/instance" >/dev/null 2>&1
  secs="$(seconds_since "$start")"
  echo "SAT| $label | $CATCHUP | $secs | $(python3 -c "print(f'{$CATCHUP/$secs:,.0f}')") |"
  for rate in $RATES; do
    local port
    port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
    RUST_LOG=info,dbmirror::latency=debug "$PERF_BIN/dbmirror" sync --metrics-listen "127.0.0.1:$port" \
      --instance "$dir/instance" >/dev/null 2>"$dir/sync-$rate.log" &
    local sync=$!
    sleep 2
    cloud_action workload --changes-per-sec "$rate"
    sleep "$RUN_SECONDS"
    cloud_action workload --changes-per-sec 0
    sleep 3
    curl -s "http://127.0.0.1:$port/metrics" >"$dir/metrics-$rate.txt"
    kill -TERM "$sync"; wait "$sync" 2>/dev/null || true
    echo "RATE| $label | $rate for $RUN_SECONDS s | $(quantiles "$dir/metrics-$rate.txt") |"
    echo "EXACT| $label | $rate | $(exact "$dir/sync-$rate.log") |"
  done
  kill "$CLOUD_PID"; wait "$CLOUD_PID" 2>/dev/null || true
}

mkdir -p "$work/sqlite"
start_postgres
lines="$(
  measure sqlite "Data Source=$work/sqlite/replica.db"
  measure postgres "$PG_URL"
  if [ -n "${COMPARE:-}" ]; then
    measure sqlite+compare "Data Source=$work/sqlite/compare.db" "$COMPARE"
    if [ -n "${PG_COMPARE_URL:-}" ]; then
      measure postgres+compare "$PG_COMPARE_URL" "$COMPARE"
    fi
  fi
)"
if [ "${BENCH:-1}" != 0 ]; then
  DBMIRROR_PG_URL="$PG_URL" cargo bench --bench steady -- --warm-up-time 1 --measurement-time "${BENCH_SECONDS:-5}" >&2
fi
echo "| target | changes caught up | seconds | changes/s |"
echo "|---|---:|---:|---:|"
grep "^SAT" <<<"$lines" | cut -c4-
echo
echo "| target | changes/s | latency p50 | p99 | max | batch commit p50 | p99 | client RSS | records applied |"
echo "|---|---|---|---|---|---|---|---|---:|"
grep "^RATE" <<<"$lines" | cut -c5-
echo
echo "Exact, from the client's per-batch latency events:"
echo
echo "| target | changes/s | latency p50 | p99 | max | per batch p50 / p99 | batches |"
echo "|---|---:|---:|---:|---:|---|---:|"
grep "^EXACT" <<<"$lines" | cut -c6-
if [ "${BENCH:-1}" != 0 ]; then
  echo
  python3 perf/criterion_table.py target/criterion steady
fi
