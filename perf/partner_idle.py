#!/usr/bin/env python3
"""Partner mode at a partner's size, measured from outside (see perf/partner_idle.sh).

Starts the release `dbmirror-cloud` with TENANTS tenants approving a partner, and one release
`dbmirror sync` partner instance mirroring them, into one SQLite file each or (SERVER=postgres,
with PGCS the server's libpq keywords) one PostgreSQL database each.

RATE=0 (idle): the time until every tenant's replica holds everything the cloud has (read
from the SQLite files' `_ReplicationState`); then, over WINDOW idle seconds, the CPU (one core
= 100%) and RSS of the partner process and of the cloud; then PROBES single changes, each at a
random tenant, and how long until that tenant's replica has applied it: p50, p90, p99, max.

RATE>0 (loaded, every tenant RATE changes/s from when every tenant has been mirrored, per
the instance's /status.json): after a minute of it, over WINDOW seconds, the CPU and RSS of both processes and the
change latency (source commit to replica commit) from the client's per-batch
`dbmirror::latency` events: over all changes p50 / p99 / max, the worst tenant's p99, and how
many tenants had no batch at all in the window (starved).
"""

import json
import os
import random
import re
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request

BIN = os.environ.get("PERF_BIN", "target/release")
TENANTS = int(os.environ.get("TENANTS", "2000"))
PROBES = int(os.environ.get("PROBES", "200"))
WINDOW = int(os.environ.get("WINDOW", "30"))
WORKERS = int(os.environ.get("WORKERS", "4"))
IDLE = int(os.environ.get("IDLE_SECONDS", "2"))
TICK = os.sysconf("SC_CLK_TCK")


def cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
    return 0.0


def admin(url, path, body=None):
    req = urllib.request.Request(url + path, data=None if body is None else json.dumps(body).encode(),
                                 headers={"Authorization": "Bearer perf", "Content-Type": "application/json"},
                                 method="GET" if body is None else "POST")
    import ssl
    context = ssl._create_unverified_context()  # the reference cloud's own certificate, on 127.0.0.1
    with urllib.request.urlopen(req, timeout=120, context=context) as r:
        return json.load(r)


def applied(path):
    """Records applied to the replica at `path` (the sum of its next cdc offsets), or -1."""
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
        try:
            rows = db.execute("SELECT text_value, int_value FROM _ReplicationState WHERE scope = 'offset'").fetchall()
        finally:
            db.close()
    except sqlite3.Error:
        return -1
    return sum(v + 1 for t, v in rows if t and t.endswith("-cdc"))


RATE = float(os.environ.get("RATE", "0"))
# The client's log level (LOG_LEVEL=Information measures the log volume of a service).
LOG_LEVEL = os.environ.get("LOG_LEVEL", "Warning")
SERVER = os.environ.get("SERVER", "sqlite")
TLS = os.environ.get("TLS", "") not in ("", "0")


def start_cloud(work):
    log = open(os.path.join(work, "cloud.log"), "w+")
    http = [] if TLS else ["--http"]
    cloud = subprocess.Popen([f"{BIN}/dbmirror-cloud", "serve", "--in-memory", *http, "--listen", "127.0.0.1:0",
                              "--admin-token", "perf", "--many-tenants", str(TENANTS), "--rows", "3",
                              "--partner", "acme:pw:*"], stdout=log, stderr=subprocess.DEVNULL)
    started = time.time()
    url = fingerprint = None
    while url is None or (TLS and fingerprint is None):
        time.sleep(0.2)
        log.seek(0)
        for line in log:
            if line.startswith("dbmirror-cloud listening on "):
                url = line.split()[-1]
            if line.startswith("certificate SHA-256 fingerprint: "):
                fingerprint = line.split()[-1]
    return cloud, url, fingerprint, time.time() - started


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listener(port, path):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=60) as r:
        return r.read().decode()


def usage(client, cloud, seconds):
    """CPU shares (one core = 100%) and peak RSS of both processes over `seconds`."""
    c0, k0, peak, cloud_peak = cpu_ticks(client.pid), cpu_ticks(cloud.pid), 0.0, 0.0
    for _ in range(seconds):
        time.sleep(1)
        peak, cloud_peak = max(peak, rss_mb(client.pid)), max(cloud_peak, rss_mb(cloud.pid))
    cpu = (cpu_ticks(client.pid) - c0) / TICK / seconds * 100
    cloud_cpu = (cpu_ticks(cloud.pid) - k0) / TICK / seconds * 100
    return cpu, peak, cloud_cpu, cloud_peak


def quantile(values, p):
    return values[min(len(values) - 1, int(p * len(values)))]


def main():
    work = tempfile.mkdtemp(prefix="partner-idle-")
    mirrors = os.path.join(work, "mirrors")
    os.makedirs(os.path.join(work, "instance"))
    cloud, url, fingerprint, cloud_up = start_cloud(work)
    port = free_port()
    server = os.environ["PGCS"] if SERVER == "postgres" else "Data Source=" + mirrors
    pattern = f"perf{os.getpid()}_{{contextId}}" if SERVER == "postgres" else "Mirror_{contextId}"
    settings = {"Partner": {"Id": "acme", "Secret": "env:ACME_SECRET", "Cloud": url,
                            "ServerConnectionString": server, "DatabaseName": pattern, "Workers": WORKERS,
                            "PollSeconds": 30, "IdleSeconds": IDLE, "SliceSeconds": 10,
                            **({"Fingerprint": fingerprint} if TLS else {})},
                "MaxPollTimeSeconds": 1, "Metrics": {"Listen": f"127.0.0.1:{port}"},
                "Logging": {"LogLevel": {"Default": LOG_LEVEL}}}
    with open(os.path.join(work, "instance", "appsettings.json"), "w") as f:
        json.dump(settings, f)
    env = dict(os.environ, ACME_SECRET="pw")
    if RATE:
        env["RUST_LOG"] = "warn,dbmirror::latency=debug"
    else:
        env.pop("RUST_LOG", None)
    sync_log = open(os.path.join(work, "sync.log"), "w+")
    start = time.time()
    client = subprocess.Popen([f"{BIN}/dbmirror", "sync", "--instance", os.path.join(work, "instance")], env=env,
                              stdout=sync_log, stderr=subprocess.STDOUT)
    try:
        if RATE:
            loaded(url, port, client, cloud, cloud_up, start, sync_log)
        else:
            idle(url, client, cloud, cloud_up, start, mirrors, os.path.join(work, "instance", "logs"))
    finally:
        client.terminate()
        cloud.terminate()
        client.wait()
        cloud.wait()
        if SERVER == "postgres":
            drop = "".join(f'DROP DATABASE IF EXISTS "perf{os.getpid()}_{ctx}";\n' for ctx in tenants_of(TENANTS))
            subprocess.run(["psql", os.environ["PGCS"], "-q", "-f", "-"], input=drop.encode(), check=False,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if os.environ.get("KEEP_LOG"):
            subprocess.run(["cp", os.path.join(work, "sync.log"), os.environ["KEEP_LOG"]])
            subprocess.run(["cp", "-r", os.path.join(work, "instance", "logs"), os.environ["KEEP_LOG"] + ".d"])
        subprocess.run(["rm", "-rf", work])


def tenants_of(n):
    return ["cust1234"] + [f"t{i:04}" for i in range(1, n + 1)]


def log_bytes(logs):
    if not os.path.isdir(logs):
        return 0
    return sum(os.path.getsize(os.path.join(logs, f)) for f in os.listdir(logs))


def idle(url, client, cloud, cloud_up, start, mirrors, logs):
    ends = {t["tenant"]: sum(t["ends"]) for t in admin(url, "/admin/overview")["overview"]["tenants"]}
    files = {ctx: os.path.join(mirrors, f"Mirror_{ctx}.db") for ctx in ends}
    behind = list(ends)
    while behind:
        time.sleep(2)
        behind = [c for c in behind if not os.path.exists(files[c]) or applied(files[c]) < ends[c]]
        if client.poll() is not None:
            sys.exit(f"the partner process ended ({client.returncode})")
    mirrored = time.time() - start
    time.sleep(5)
    logged = log_bytes(logs)
    cpu, peak, cloud_cpu, cloud_peak = usage(client, cloud, WINDOW)
    idle_log = (log_bytes(logs) - logged) / WINDOW
    logged = log_bytes(logs)
    latencies = []
    tenants = sorted(files)
    for _ in range(PROBES):
        ctx = random.choice(tenants)
        before = applied(files[ctx])
        t0 = time.time()
        admin(url, f"/admin/{ctx}/actions/changes", {"count": 1})
        while applied(files[ctx]) <= before:
            if time.time() - t0 > 120:
                sys.exit(f"a change at {ctx} was not applied within 120 s")
            time.sleep(0.02)
        latencies.append(time.time() - t0)
        time.sleep(random.uniform(0.1, 0.4))
    latencies.sort()
    per_change = (log_bytes(logs) - logged) / max(1, len(latencies))
    print(f"log at {LOG_LEVEL}: {idle_log:.0f} bytes/s idle for {TENANTS + 1} tenants "
          f"({idle_log * 86400 / (TENANTS + 1):.0f} bytes per tenant per day), {per_change:.0f} bytes per change",
          file=sys.stderr)
    print(f"| {TENANTS + 1} | {WORKERS} | {cloud_up:.1f} s | {mirrored:.0f} s | {cpu:.1f}% | {peak:.0f} MB "
          f"| {cloud_cpu:.1f}% / {cloud_peak:.0f} MB | {len(latencies)} | {quantile(latencies, 0.5):.2f} / "
          f"{quantile(latencies, 0.9):.2f} / {quantile(latencies, 0.99):.2f} / {latencies[-1]:.2f} s |")


LATENCY = re.compile(r"tenant=([A-Za-z0-9_-]+).*?records=(\d+) latency_ms=(\d+)")


def loaded(url, port, client, cloud, cloud_up, start, sync_log):
    everyone = TENANTS + 1
    while True:
        time.sleep(2)
        if client.poll() is not None:
            sys.exit(f"the partner process ended ({client.returncode})")
        try:
            page = json.loads(listener(port, "/status.json"))
        except OSError:
            continue
        counts = dict((state, n) for state, n in page["counts"])
        if page["total"] == everyone and counts["new"] == 0 and counts["watching"] + counts["busy"] == everyone:
            break
    mirrored = time.time() - start
    # The workload starts once every tenant is mirrored, and is measured after a minute.
    admin(url, "/admin/workload", {"changes_per_sec": int(RATE)})
    time.sleep(60)
    sync_log.seek(0, 2)
    offset = sync_log.tell()
    cpu, peak, cloud_cpu, cloud_peak = usage(client, cloud, WINDOW)
    sync_log.seek(offset)
    per_tenant = {}
    changes = []
    for line in sync_log:
        m = LATENCY.search(line)
        if m:
            ctx, records, ms = m.group(1), int(m.group(2)), int(m.group(3)) / 1000
            per_tenant.setdefault(ctx, []).extend([ms] * records)
            changes.extend([ms] * records)
    changes.sort()
    worst = max(quantile(sorted(v), 0.99) for v in per_tenant.values())
    starved = everyone - len(per_tenant)
    print(f"| {SERVER} | {everyone} × {RATE:g}/s | {WORKERS} | {mirrored:.0f} s | {len(changes) / WINDOW:.0f}/s "
          f"| {quantile(changes, 0.5):.2f} / {quantile(changes, 0.99):.2f} / {changes[-1]:.2f} s | {worst:.2f} s "
          f"| {starved} | {cpu:.0f}% / {peak:.0f} MB | {cloud_cpu:.0f}% / {cloud_peak:.0f} MB |")


if __name__ == "__main__":
    main()
