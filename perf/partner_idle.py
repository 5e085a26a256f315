#!/usr/bin/env python3
"""Partner mode at a partner's size, measured from outside (see perf/partner_idle.sh).

Starts the release `dbmirror-cloud` with TENANTS idle tenants approving a partner, and one
release `dbmirror sync` partner instance mirroring them into one SQLite file each. Reports:
the time until every tenant's replica holds everything the cloud has; then, over WINDOW
idle seconds, the CPU (one core = 100%) and RSS of the partner process and of the cloud;
then PROBES single changes, each at a random tenant, and how long until that tenant's
replica has applied it (read from its `_ReplicationState` offsets): p50, p90, p99, max.
"""

import json
import os
import random
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
    with urllib.request.urlopen(req, timeout=120) as r:
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


def main():
    work = tempfile.mkdtemp(prefix="partner-idle-")
    mirrors = os.path.join(work, "mirrors")
    os.makedirs(os.path.join(work, "instance"))
    cloud_log = open(os.path.join(work, "cloud.log"), "w+")
    cloud = subprocess.Popen([f"{BIN}/dbmirror-cloud", "serve", "--in-memory", "--http", "--listen", "127.0.0.1:0",
                              "--admin-token", "perf", "--many-tenants", str(TENANTS), "--rows", "3",
                              "--partner", "acme:pw:*"], stdout=cloud_log, stderr=subprocess.DEVNULL)
    started = time.time()
    url = None
    while url is None:
        time.sleep(0.2)
        cloud_log.seek(0)
        for line in cloud_log:
            if line.startswith("dbmirror-cloud listening on "):
                url = line.split()[-1]
    cloud_up = time.time() - started
    settings = {"Partner": {"Id": "acme", "Secret": "env:ACME_SECRET", "Cloud": url,
                            "ServerConnectionString": "Data Source=" + mirrors, "Workers": WORKERS,
                            "PollSeconds": 30, "IdleSeconds": IDLE, "SliceSeconds": 10},
                "MaxPollTimeSeconds": 1, "Logging": {"LogLevel": {"Default": "Warning"}}}
    with open(os.path.join(work, "instance", "appsettings.json"), "w") as f:
        json.dump(settings, f)
    env = dict(os.environ, ACME_SECRET="pw")
    start = time.time()
    client = subprocess.Popen([f"{BIN}/dbmirror", "sync", "--instance", os.path.join(work, "instance")], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        ends = {t["tenant"]: sum(t["ends"]) for t in admin(url, "/admin/overview")["overview"]["tenants"]}
        files = {ctx: os.path.join(mirrors, f"Mirror_{ctx}.db") for ctx in ends}
        behind = list(ends)
        while behind:
            time.sleep(2)
            behind = [c for c in behind if not os.path.exists(files[c]) or applied(files[c]) < ends[c]]
            if client.poll() is not None:
                sys.exit(f"the partner process ended ({client.returncode}); see {work}")
        mirrored = time.time() - start
        time.sleep(5)
        c0, k0, peak, cloud_peak = cpu_ticks(client.pid), cpu_ticks(cloud.pid), 0.0, 0.0
        for _ in range(WINDOW):
            time.sleep(1)
            peak, cloud_peak = max(peak, rss_mb(client.pid)), max(cloud_peak, rss_mb(cloud.pid))
        cpu = (cpu_ticks(client.pid) - c0) / TICK / WINDOW * 100
        cloud_cpu = (cpu_ticks(cloud.pid) - k0) / TICK / WINDOW * 100
        latencies = []
        tenants = sorted(files)
        for _ in range(PROBES):
            ctx = random.choice(tenants)
            before = applied(files[ctx])
            t0 = time.time()
            admin(url, f"/admin/{ctx}/actions/changes", {"count": 1})
            while applied(files[ctx]) <= before:
                if time.time() - t0 > 120:
                    sys.exit(f"a change at {ctx} was not applied within 120 s; see {work}")
                time.sleep(0.02)
            latencies.append(time.time() - t0)
            time.sleep(random.uniform(0.1, 0.4))
        latencies.sort()

        def q(p):
            return latencies[min(len(latencies) - 1, int(p * len(latencies)))]

        print(f"| {TENANTS + 1} | {WORKERS} | {cloud_up:.1f} s | {mirrored:.0f} s | {cpu:.1f}% | {peak:.0f} MB "
              f"| {cloud_cpu:.1f}% / {cloud_peak:.0f} MB | {len(latencies)} | {q(0.5):.2f} / {q(0.9):.2f} / "
              f"{q(0.99):.2f} / {latencies[-1]:.2f} s |")
    finally:
        client.terminate()
        cloud.terminate()
        client.wait()
        cloud.wait()
    subprocess.run(["rm", "-rf", work])


if __name__ == "__main__":
    main()
