#!/usr/bin/env bash
# Two partner processes on one PostgreSQL server, the tenants changing, and the database
# restarted under them again and again (`pg_ctl stop -m fast`, a pause, start): the way
# issue 22's divergence was met. Each restart ends every session, so every claim (advisory
# lock) is lost while passes may be retrying a batch; the writer fence must keep a pass that
# lost its claim from committing an older batch over a newer one. At the end every tenant is
# verified against the source (`verify --tenant`), and the fence's refusals are counted.
#
#   scenarios/partner_db_restarts.sh [OUTAGES] [TENANTS]      (defaults 10 and 30)
#
# Uses the binaries in $BIN (target/debug by default; e.g. BIN=target/release), PostgreSQL from
# /usr/lib/postgresql (a private cluster on 127.0.0.1, removed at the end). Not part of CI:
# about OUTAGES × 40 s.
set -euo pipefail
OUTAGES="${1:-10}"
TENANTS="${2:-30}"
root="$(cd "$(dirname "$0")/.." && pwd)"
bin="${BIN:-$root/target/debug}"
pgbin="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)"
work="$(mktemp -d /tmp/dbmirror-restarts.XXXXXX)"
chmod 755 "$work"
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  as_pg "$pgbin/pg_ctl" -D "$work/pg" stop -m immediate >/dev/null 2>&1 || true
  [ -n "${KEEP:-}" ] || rm -rf "$work"
}
trap cleanup EXIT
say() { printf '%s  %s\n' "$(date +%T)" "$*"; }

port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
mkdir -p "$work/pg" && [ "$(id -u)" = 0 ] && chown postgres "$work/pg"
as_pg "$pgbin/initdb" -A trust -U postgres -D "$work/pg" >/dev/null
start_pg() { as_pg "$pgbin/pg_ctl" -D "$work/pg" -l "$work/pg/log" -w -o "-p $port -k /tmp -c listen_addresses=127.0.0.1" start >/dev/null; }
start_pg
server="host=127.0.0.1 port=$port user=postgres dbname=postgres"

"$bin/dbmirror-cloud" serve --http --in-memory --listen 127.0.0.1:0 --admin-token adm --tenant t0000 \
  --many-tenants "$TENANTS" --rows 40 --changes-per-sec 4 --partner acme:partner-pw:'*' >"$work/cloud.out" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do grep -q "listening on" "$work/cloud.out" && break; sleep 0.1; done
url="$(sed -n 's/^dbmirror-cloud listening on //p' "$work/cloud.out")"
say "cloud $url, PostgreSQL on $port, $TENANTS tenants, $OUTAGES restarts"

for host in a b; do
  mkdir -p "$work/$host"
  cat >"$work/$host/appsettings.json" <<JSON
{ "Partner": { "Id": "acme", "Secret": "env:ACME_SECRET", "Cloud": "$url",
    "ServerConnectionString": "$server", "DatabaseName": "m_{contextId}",
    "Workers": 3, "PollSeconds": 1, "IdleSeconds": 1, "SliceSeconds": 2 },
  "MaxPollTimeSeconds": 1, "CommitIntervalSeconds": 2 }
JSON
done
ACME_SECRET=partner-pw "$bin/dbmirror" validate --instance "$work/a" >/dev/null || true
[ -f "$work/a/dbmirror.key" ] || ACME_SECRET=partner-pw timeout 3 "$bin/dbmirror" sync --instance "$work/a" >/dev/null 2>&1 || true
cp "$work/a/dbmirror.key" "$work/b/dbmirror.key"
for host in a b; do
  ACME_SECRET=partner-pw "$bin/dbmirror" sync --instance "$work/$host" >"$work/$host.out" 2>&1 &
  pids+=($!)
done
sleep 20
for i in $(seq 1 "$OUTAGES"); do
  as_pg "$pgbin/pg_ctl" -D "$work/pg" stop -m fast >/dev/null
  say "restart $i/$OUTAGES: the database is down"
  sleep 20
  start_pg
  sleep 15
done
"$bin/dbmirror-cloud" action --url "$url" --admin-token adm workload --changes-per-sec 0 >/dev/null
say "workload stopped; waiting for every tenant to converge"
tenants=(t0000 $(seq -f 't%04g' 1 "$TENANTS"))
pending=("${tenants[@]}")
deadline=$((SECONDS + 300))
while [ "${#pending[@]}" -gt 0 ] && [ "$SECONDS" -lt "$deadline" ]; do
  left=()
  for ctx in "${pending[@]}"; do
    ACME_SECRET=partner-pw "$bin/dbmirror" verify --tenant "$ctx" --instance "$work/a" >"$work/verify-$ctx.out" 2>&1 || left+=("$ctx")
  done
  pending=("${left[@]+"${left[@]}"}")
  [ "${#pending[@]}" -gt 0 ] && sleep 5
done
superseded="$(cat "$work"/a/logs/* "$work"/b/logs/* 2>/dev/null | grep -c "took the tenant over" || true)"
if [ "${#pending[@]}" -gt 0 ]; then
  say "DIFFERENT after 300 s: ${pending[*]}"
  for ctx in "${pending[@]}"; do grep -v " ok$" "$work/verify-$ctx.out" | head -n 5; done
  KEEP=1
  say "kept $work"
  exit 1
fi
say "all ${#tenants[@]} tenants equal to the source after $OUTAGES restarts; passes ended by the fence: $superseded"
