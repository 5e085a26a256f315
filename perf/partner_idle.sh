#!/usr/bin/env bash
# Partner mode at a partner's size (issue 24): TENANTS idle tenants on one partner instance
# (release binaries, SQLite file per tenant, a real cloud process on the same cores). Prints
# one table row: all mirrored after, idle CPU and RSS (client; cloud), and the latency of
# PROBES single changes at random tenants (p50 / p90 / p99 / max). See perf/partner_idle.py.
#
#   TENANTS=2000 PROBES=200 perf/partner_idle.sh
#   PERF_BIN=/path/to/other/build TENANTS=2000 perf/partner_idle.sh   # a baseline build
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${PERF_BIN:-}" ]; then
  cargo build --release --quiet --bin dbmirror --bin dbmirror-cloud
fi
echo "| tenants | workers | cloud up after | all mirrored after | client CPU idle | client RSS | cloud CPU / RSS idle | probes | change applied after p50 / p90 / p99 / max |"
echo "|---|---|---|---|---|---|---|---|---|"
python3 perf/partner_idle.py
