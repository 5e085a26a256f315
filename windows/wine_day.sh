#!/usr/bin/env bash
# A customer's day with dbmirror.exe under Wine (Debian's wine64, Wine 8), against a Linux
# `dbmirror-cloud` over HTTPS with a pinned certificate, into a SQLite replica in an instance
# folder whose path has spaces (C:\ProgramData\dbmirror\Test Instance):
#
#   the README's demo; provision (approved without a browser, as the tests do); validate;
#   sync --until-idle; the key file is DPAPI-protected (not the raw key); a restart that
#   unseals the stored tokens; a token refresh (the cloud's access tokens live 5 s);
#   lifecycle events while `sync` runs (changes, a new table, an added column, suspend and
#   resume), then a clean stop (Ctrl-C); status; verify equal; the Windows service installed,
#   started, syncing, stopped and removed through Wine's Service Control Manager; a moved
#   host's refused key and `reconnect`; a PostgreSQL replica on 127.0.0.1 (when PostgreSQL's
#   server binaries are installed, as CI installs them).
#
#   windows/wine_day.sh EXE CLOUD      # EXE: dbmirror.exe; CLOUD: a Linux dbmirror-cloud
#
# Wine 8 lacks bcryptprimitives.dll (ProcessPrng), which Rust's std needs and every
# supported Windows has: windows/bcryptprimitives.c, built here with mingw and put next to
# the exe, stands in for it. It is a test shim and never part of a release.
set -euo pipefail
EXE="$(realpath "$1")"
CLOUD="$(realpath "$2")"
here="$(cd "$(dirname "$0")" && pwd)"
command -v wine >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wine64 >/dev/null; }

work="$(mktemp -d)"
export WINEPREFIX="$work/prefix" WINEDEBUG=-all WINEARCH=win64 WINEDLLOVERRIDES="mscoree,mshtml="
cleanup() {
  [ -n "${PG_DATA:-}" ] && runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$PG_DATA" -m immediate stop >/dev/null 2>&1
  [ -n "${SYNC_PID:-}" ] && kill "$SYNC_PID" 2>/dev/null
  [ -n "${CLOUD_PID:-}" ] && kill "$CLOUD_PID" 2>/dev/null
  wineserver -k 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
step() { printf '\n==> %s\n' "$*"; }
fail() { echo "FAILED: $*" >&2; exit 1; }

step "a Wine prefix"
wine wineboot -i >/dev/null 2>&1 || true
app="$WINEPREFIX/drive_c/Program Files/dbmirror"
mkdir -p "$app"
cp "$EXE" "$app/dbmirror.exe"
x86_64-w64-mingw32-gcc-posix -shared -O2 -o "$app/bcryptprimitives.dll" "$here/bcryptprimitives.c" -ladvapi32
win() { wine "$app/dbmirror.exe" "$@"; }
win --version

step "the README's demo"
demo="$WINEPREFIX/drive_c/users/demo"
mkdir -p "$demo"
(cd "$demo" && win demo --rows 100 --seconds 3 | tail -n 3) | tee "$work/demo.out"
grep -q "equals the source" "$work/demo.out" || fail "the demo's replica is not equal"

step "a Linux cloud over HTTPS"
"$CLOUD" serve --in-memory --listen 127.0.0.1:0 --admin-token day --rows 300 --token-ttl-secs 5 >"$work/cloud.log" 2>&1 &
CLOUD_PID=$!
for _ in $(seq 1 100); do grep -q "listening on" "$work/cloud.log" && break; sleep 0.2; done
URL="$(sed -n 's/^dbmirror-cloud listening on //p' "$work/cloud.log")"
FP="$(sed -n 's/^certificate SHA-256 fingerprint: //p' "$work/cloud.log")"
[ -n "$URL" ] && [ -n "$FP" ] || fail "the cloud did not start: $(cat "$work/cloud.log")"
action() { "$CLOUD" action --url "$URL" --fingerprint "$FP" --admin-token day "$@" >/dev/null; }

# with_approval OUT SESSION_NAME ARGS…: runs a command that waits for an administrator's
# approval (`provision`, `reconnect`), approves its code as the tests do (the browser page's
# form), and waits for it; its output is in OUT.
with_approval() {
  local out="$1" name="$2" code="" pid
  shift 2
  win "$@" >"$out" 2>&1 &
  pid=$!
  for _ in $(seq 1 150); do
    code="$(sed -n 's/.*approve code \([A-Z0-9-]*\)\..*/\1/p' "$out")"
    [ -n "$code" ] && break
    sleep 0.2
  done
  [ -n "$code" ] || fail "$1 printed no approval code: $(cat "$out")"
  curl -sk -o /dev/null -X POST "$URL/provision" --data "user_code=$code&tenant=cust1234&session_name=$name&action=approve"
  wait "$pid" || fail "$*: $(cat "$out")"
}

step "provision into C:\\ProgramData\\dbmirror\\Test Instance"
dir='C:\ProgramData\dbmirror\Test Instance'
unix_dir="$WINEPREFIX/drive_c/ProgramData/dbmirror/Test Instance"
mkdir -p "$unix_dir"
cat >"$unix_dir/appsettings.json" <<JSON
{ "ReplicaDatabase": { "ConnectionString": "Data Source=C:\\\\ProgramData\\\\dbmirror\\\\Test Instance\\\\replica.db" },
  "MaxPollTimeSeconds": 2, "CommitIntervalSeconds": 2 }
JSON
with_approval "$work/provision.out" wine provision --cloud "$URL" --fingerprint "$FP" --instance "$dir"
grep "Replication ID" "$work/provision.out"

step "validate, then the first sync"
win validate --instance "$dir"
win sync --until-idle --instance "$dir" | tail -n 2

step "the key file is protected by DPAPI"
key="$unix_dir/dbmirror.key"
size="$(stat -c %s "$key")"
# A DPAPI blob starts with version 1 and, on Windows, the DPAPI provider's GUID
# (df9d8cd0-1501-11d1-8c7a-00c04fc297eb); Wine's own CryptProtectData writes "Wine Crypt32 ok"
# there instead. The raw key would be 32 bytes of anything.
head="$(od -An -tx1 -N20 "$key" | tr -d ' \n')"
case "$head" in
  01000000d08c9ddf0115d1118c7a00c04fc297eb*) kind="a Windows DPAPI blob" ;;
  0100000057696e652043727970743332206f6b00*) kind="a DPAPI blob (Wine's format)" ;;
  *) fail "the key file is not a DPAPI blob ($size bytes, starts $head)" ;;
esac
[ "$size" -gt 32 ] || fail "the key file is $size bytes"
echo "dbmirror.key: $size bytes, $kind (the raw key would be 32 bytes)"

step "a restart unseals the stored tokens; the access token (5 s) is refreshed"
sleep 6
win info --instance "$dir" | grep -i "access token"
win sync --until-idle --instance "$dir" | tail -n 1
win info --instance "$dir" | grep -i "access token"

step "lifecycle events while sync runs"
win sync --instance "$dir" >"$work/sync.out" 2>&1 &
SYNC_PID=$!
sleep 5
action changes --count 200
action new-table --table crm7.wine_new --count 50
action add-column --table crm7.person --column wine_note
action changes --count 100
action suspend
sleep 6
action resume
action changes --count 100
sleep 10
# The Windows process itself (the shell's job is only its launcher): Wine turns SIGINT into
# the console's Ctrl-C event, which ends `sync` after the current batch.
pid="$(pgrep -f 'dbmirror.exe sync --instance' | head -1 || true)"
[ -n "$pid" ] && kill -INT "$pid"
for _ in $(seq 1 60); do kill -0 "$SYNC_PID" 2>/dev/null || break; sleep 0.5; done
if kill -0 "$SYNC_PID" 2>/dev/null; then
  wine taskkill /F /IM dbmirror.exe >/dev/null 2>&1 || true
  wait "$SYNC_PID" 2>/dev/null || true
  fail "Ctrl-C did not stop sync"
fi
grep -q "stopping: finishing the current batch" "$work/sync.out" || fail "sync did not stop cleanly: $(tail -n 5 "$work/sync.out")"
SYNC_PID=""
tail -n 5 "$work/sync.out"
win sync --until-idle --instance "$dir" | tail -n 1

step "status and verify"
win status --instance "$dir" | tee "$work/status.out"
win verify --instance "$dir" | tee "$work/verify.out"
grep -q "DIFFERENT\|behind" "$work/verify.out" && fail "verify found a difference"
grep -q "crm7.wine_new" "$work/verify.out" || fail "the new table is missing"

step "the Windows service under Wine's Service Control Manager"
win install --instance "$dir" --start | tee "$work/install.out" || fail "install"
name="$(sed -n 's/^Installed the Windows service //p' "$work/install.out")"
action changes --count 50
sleep 12
wine sc query "$name" | tee "$work/query.out"
win status --instance "$dir" | grep "client running"
wine sc stop "$name" >/dev/null || true
for _ in $(seq 1 120); do wine sc query "$name" | grep -q STOPPED && break; sleep 0.5; done
wine sc query "$name" | grep STATE
wine sc query "$name" | grep -q STOPPED || fail "the service did not stop"
grep -rq "stops the service: finishing the current batch" "$unix_dir/logs" || fail "the service's stop is not in its log"
echo "the service stopped after finishing its batch (its log says so)"
win uninstall --instance "$dir"
win verify --instance "$dir" | tail -n 3

step "a moved host: the folder on another machine, whose DPAPI does not open the key; reconnect"
# Wine's DPAPI is not bound to a machine (a key file opens in any Wine prefix), so the other
# machine's refusal is made here by damaging the protected key, as DPAPI on another Windows
# machine would refuse it.
moved='C:\ProgramData\dbmirror\Moved Instance'
unix_moved="$WINEPREFIX/drive_c/ProgramData/dbmirror/Moved Instance"
cp -r "$unix_dir" "$unix_moved"
rm -rf "$unix_moved/logs"
sed -i 's/Test Instance/Moved Instance/' "$unix_moved/appsettings.json"
printf '\x00\x00\x00\x00' | dd of="$unix_moved/dbmirror.key" bs=1 seek=128 conv=notrunc status=none
if win sync --until-idle --instance "$moved" >"$work/moved.out" 2>&1; then
  fail "a key from another machine was accepted"
fi
grep -q "dbmirror reconnect" "$work/moved.out" || fail "no advice to reconnect: $(tail -n 3 "$work/moved.out")"
tail -n 1 "$work/moved.out"
with_approval "$work/reconnect.out" wine reconnect --instance "$moved"
grep "Reconnected" "$work/reconnect.out"
ls "$unix_moved" | grep -q '^dbmirror.key.unusable-' || fail "the old key was not kept aside"
action changes --count 50
win sync --until-idle --instance "$moved" | tail -n 1
win verify --instance "$moved" | tail -n 2

step "PostgreSQL on 127.0.0.1 as the replica of dbmirror.exe"
PG_BIN="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)"
if [ -z "$PG_BIN" ] || [ ! -x "$PG_BIN/initdb" ]; then
  echo "skipped: PostgreSQL's server binaries are not installed"
else
  pg_dir="$work/pg"
  chmod 755 "$work"
  mkdir -p "$pg_dir" && chown postgres:postgres "$pg_dir"
  PG_DATA="$pg_dir/data"
  runuser -u postgres -- "$PG_BIN/initdb" -A trust -U postgres -E UTF8 --no-sync -D "$PG_DATA" >/dev/null
  port=$(( 30000 + RANDOM % 20000 ))
  runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$PG_DATA" -w -l "$pg_dir/log" \
    -o "-p $port -k $pg_dir -c listen_addresses=127.0.0.1 -c fsync=off" start >/dev/null
  "$PG_BIN/psql" -h 127.0.0.1 -p "$port" -U postgres -qc "CREATE DATABASE wine" >/dev/null
  pg='C:\ProgramData\dbmirror\PostgreSQL Instance'
  unix_pg="$WINEPREFIX/drive_c/ProgramData/dbmirror/PostgreSQL Instance"
  mkdir -p "$unix_pg"
  printf '{ "ReplicaDatabase": { "ConnectionString": "host=127.0.0.1 port=%s user=postgres dbname=wine" } }\n' "$port" \
    >"$unix_pg/appsettings.json"
  with_approval "$work/pg.out" winepg provision --cloud "$URL" --fingerprint "$FP" --instance "$pg"
  win sync --until-idle --instance "$pg" | tail -n 1
  win verify --instance "$pg" | tee "$work/pgverify.out" | tail -n 2
  grep -q "DIFFERENT\|behind" "$work/pgverify.out" && fail "verify (PostgreSQL) found a difference"
fi
echo "the customer's day under Wine passed"
