#!/usr/bin/env bash
# Partner mode at a partner's size (issue 24): TENANTS tenants on one partner instance
# (release binaries, a real cloud process on the same cores). Prints one table row. Idle
# (RATE=0): all mirrored after, idle CPU and RSS (client; cloud), and the latency of PROBES
# single changes at random tenants (p50 / p90 / p99 / max). Loaded (RATE changes/s at every
# tenant): the change latency over WINDOW seconds, the worst tenant's p99 and the tenants
# starved. TLS=1 for HTTPS (a pinned certificate) instead of plain HTTP. SQLite file per
# tenant, or SERVER=postgres PGCS='host=… user=…' for a database per
# tenant. See perf/partner_idle.py.
#
#   TENANTS=2000 PROBES=200 perf/partner_idle.sh
#   TENANTS=500 RATE=2 WINDOW=60 SERVER=postgres PGCS='host=127.0.0.1 user=postgres' perf/partner_idle.sh
#   PERF_BIN=/path/to/other/build TENANTS=2000 perf/partner_idle.sh   # a baseline build
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${PERF_BIN:-}" ]; then
  cargo build --release --quiet --bin dbmirror --bin dbmirror-cloud
fi
if [ "${RATE:-0}" = 0 ]; then
  echo "| tenants | workers | cloud up after | all mirrored after | client CPU idle | client RSS | cloud CPU / RSS idle | probes | change applied after p50 / p90 / p99 / max |"
  echo "|---|---|---|---|---|---|---|---|---|"
else
  echo "| server | tenants × changes/s | workers | all mirrored after | applied | change latency p50 / p99 / max | worst tenant's p99 | tenants starved | client CPU / RSS | cloud CPU / RSS |"
  echo "|---|---|---|---|---|---|---|---|---|---|"
fi
python3 perf/partner_idle.py
