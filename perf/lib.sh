# Shared by the end-to-end perf scripts (source it): a reference cloud from the release binary
# and a client instance provisioned against it through the device grant, with the approval
# posted as a browser would.

# start_cloud DIR [serve args…]: starts `dbmirror-cloud serve` (in memory) and sets CLOUD_PID,
# CLOUD_URL and CLOUD_FP (empty for --http).
start_cloud() {
  local dir="$1"; shift
  mkdir -p "$dir"
  "$PERF_BIN/dbmirror-cloud" serve --in-memory --listen 127.0.0.1:0 --admin-token perf "$@" >"$dir/cloud.log" 2>/dev/null &
  CLOUD_PID=$!
  until CLOUD_URL="$(sed -n 's/^dbmirror-cloud listening on //p' "$dir/cloud.log")" && [ -n "$CLOUD_URL" ]; do sleep 0.3; done
  CLOUD_FP="$(sed -n 's/^certificate SHA-256 fingerprint: //p' "$dir/cloud.log")"
}

# provision CLIENT DIR CONNECTION_STRING NAME [SETTINGS_JSON]: an instance folder in DIR for
# the replica (with SETTINGS_JSON's top-level keys added to appsettings.json), provisioned
# into the running cloud as session NAME.
provision() {
  local client="$1" dir="$2" conn="$3" name="$4" settings="${5:-{\}}" trust=() code=""
  mkdir -p "$dir"
  python3 -c 'import json,sys; s=json.loads(sys.argv[2]); s["ReplicaDatabase"]={"ConnectionString":sys.argv[1]}; print(json.dumps(s))' \
    "$conn" "$settings" >"$dir/appsettings.json"
  [ -n "$CLOUD_FP" ] && trust=(--fingerprint "$CLOUD_FP")
  "$client" provision --cloud "$CLOUD_URL" "${trust[@]}" --instance "$dir" >"$dir/provision.log" 2>&1 &
  local pid=$!
  until code="$(sed -n 's/.*approve code \([A-Z0-9-]*\)\..*/\1/p' "$dir/provision.log")" && [ -n "$code" ]; do sleep 0.2; done
  curl -sk -o /dev/null -X POST "$CLOUD_URL/provision" \
    --data "user_code=$code&tenant=cust1234&session_name=$name&action=approve"
  wait "$pid"
}

# cloud_action ACTION [args…]: an operations call on the running cloud.
cloud_action() {
  local trust=()
  [ -n "$CLOUD_FP" ] && trust=(--fingerprint "$CLOUD_FP")
  "$PERF_BIN/dbmirror-cloud" action --url "$CLOUD_URL" "${trust[@]}" --admin-token perf "$@" >/dev/null
}

# seconds_since START: elapsed seconds (START from `date +%s.%N`).
seconds_since() {
  python3 -c "import sys,time; print(f'{time.time()-float(sys.argv[1]):.3f}')" "$1"
}
