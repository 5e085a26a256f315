#!/usr/bin/env python3
"""Takeover, measured (issue 24 #3): three partner processes share TENANTS tenants on one
PostgreSQL server while every tenant changes; one process is SIGKILLed mid-run. From the
pass records each tenant's database keeps (`partner_passes`: host, start, end), it reports
how soon the others resumed the dead process's tenants, checks that no two live processes'
passes of a tenant ever overlapped, and at the end verifies every tenant against the source
(`verify --tenant`). Exits non-zero on an overlap or a tenant that differs.

    scenarios/partner_takeover.py            (TENANTS=60, BIN=target/release, POLL=5)

PostgreSQL from /usr/lib/postgresql: a private cluster on 127.0.0.1, removed at the end. Not
part of CI: about two minutes.
"""

import glob
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("BIN", os.path.join(ROOT, "target", "release"))
TENANTS = int(os.environ.get("TENANTS", "60"))
POLL = int(os.environ.get("POLL", "5"))
PGBIN = sorted(glob.glob("/usr/lib/postgresql/*/bin"))[-1]


def say(text):
    print(time.strftime("%H:%M:%S"), text, flush=True)


def as_pg(args, **kw):
    if os.getuid() == 0:
        args = ["runuser", "-u", "postgres", "--"] + args
    return subprocess.run(args, check=True, stdout=subprocess.DEVNULL, **kw)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def host_name():
    """The host part of a process's name in the pass records, found as dbmirror finds it."""
    for name in ("HOSTNAME", "COMPUTERNAME"):
        if os.environ.get(name):
            return os.environ[name]
    try:
        return open("/etc/hostname").read().strip() or "host"
    except OSError:
        return "host"


def passes(port, ctx):
    """(host, start_ms, end_ms or None) of the tenant's recorded passes."""
    out = subprocess.run(
        ["psql", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "-d", f"m_{ctx}", "-Atc",
         "SELECT text_value FROM \"_ReplicationState\" WHERE scope = 'session' AND name = 'partner_passes'"],
        capture_output=True, text=True).stdout
    rows = []
    for line in out.splitlines():
        parts = line.split(" ")
        if len(parts) == 3:
            rows.append((parts[0], int(parts[1]), None if parts[2] == "-" else int(parts[2])))
    return rows


def main():
    work = tempfile.mkdtemp(prefix="dbmirror-takeover-")
    os.chmod(work, 0o755)
    procs = {}
    pg = os.path.join(work, "pg")
    os.makedirs(pg)
    if os.getuid() == 0:
        shutil.chown(pg, "postgres")
    port = free_port()
    try:
        as_pg([f"{PGBIN}/initdb", "-A", "trust", "-U", "postgres", "-D", pg])
        as_pg([f"{PGBIN}/pg_ctl", "-D", pg, "-l", f"{pg}/log", "-w", "-o",
               f"-p {port} -k /tmp -c listen_addresses=127.0.0.1 -c max_connections=200", "start"])
        cloud_out = open(os.path.join(work, "cloud.out"), "w+")
        procs["cloud"] = subprocess.Popen(
            [f"{BIN}/dbmirror-cloud", "serve", "--http", "--in-memory", "--listen", "127.0.0.1:0", "--admin-token",
             "adm", "--tenant", "t0000", "--many-tenants", str(TENANTS), "--rows", "20", "--changes-per-sec", "2",
             "--partner", "acme:partner-pw:*"], stdout=cloud_out, stderr=subprocess.STDOUT)
        url = ""
        while not url:
            time.sleep(0.1)
            cloud_out.seek(0)
            url = next((l.split("listening on ")[1].strip() for l in cloud_out if "listening on" in l), "")
        server = f"host=127.0.0.1 port={port} user=postgres dbname=postgres"
        env = dict(os.environ, ACME_SECRET="partner-pw")
        env.pop("RUST_LOG", None)
        for host in "abc":
            os.makedirs(os.path.join(work, host))
            with open(os.path.join(work, host, "appsettings.json"), "w") as f:
                json.dump({"Partner": {"Id": "acme", "Secret": "env:ACME_SECRET", "Cloud": url,
                                       "ServerConnectionString": server, "DatabaseName": "m_{contextId}",
                                       "Workers": 3, "PollSeconds": POLL, "IdleSeconds": 1, "SliceSeconds": 2},
                           "MaxPollTimeSeconds": 1, "CommitIntervalSeconds": 2}, f)
        # One key for all three (each process seals and opens every tenant's tokens).
        subprocess.run([f"{BIN}/dbmirror", "validate", "--instance", os.path.join(work, "a")], env=env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if not os.path.exists(os.path.join(work, "a", "dbmirror.key")):
            subprocess.run(["timeout", "3", f"{BIN}/dbmirror", "sync", "--instance", os.path.join(work, "a")],
                           env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for host in "bc":
            shutil.copy(os.path.join(work, "a", "dbmirror.key"), os.path.join(work, host, "dbmirror.key"))
        for host in "abc":
            procs[host] = subprocess.Popen([f"{BIN}/dbmirror", "sync", "--instance", os.path.join(work, host)],
                                           env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        say(f"cloud {url}, PostgreSQL on {port}, {TENANTS + 1} tenants changing, three processes, PollSeconds {POLL}")
        time.sleep(30)
        victim = f"{host_name()}/{procs['b'].pid}"
        killed_ms = int(time.time() * 1000)
        procs["b"].kill()
        procs["b"].wait()
        say(f"SIGKILLed {victim}")
        time.sleep(max(30, 4 * POLL))
        subprocess.run([f"{BIN}/dbmirror-cloud", "action", "--url", url, "--admin-token", "adm", "workload",
                        "--changes-per-sec", "0"], check=True, stdout=subprocess.DEVNULL)
        say("workload stopped; verifying every tenant")
        tenants = ["t0000"] + [f"t{i:04d}" for i in range(1, TENANTS + 1)]
        pending, deadline = list(tenants), time.time() + 300
        while pending and time.time() < deadline:
            pending = [ctx for ctx in pending if subprocess.run(
                [f"{BIN}/dbmirror", "verify", "--tenant", ctx, "--instance", os.path.join(work, "a")], env=env,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode != 0]
            if pending:
                time.sleep(5)
        takeovers, overlaps, held = [], [], 0
        for ctx in tenants:
            rows = passes(port, ctx)
            before = [r for r in rows if r[1] <= killed_ms]
            if before and before[-1][0] == victim:
                held += 1
                after = [r[1] for r in rows if r[0] != victim and r[1] > killed_ms]
                takeovers.append((min(after) - killed_ms) / 1000 if after else None)
            live = [r for r in rows if r[0] != victim or r[2] is not None]
            for i, (h1, s1, e1) in enumerate(live):
                for h2, s2, e2 in live[i + 1:]:
                    if h1 != h2 and s2 < (e1 if e1 is not None else s2 + 1) and s1 < (e2 if e2 is not None else s1 + 1):
                        overlaps.append((ctx, h1, s1, e1, h2, s2, e2))
        resumed = sorted(t for t in takeovers if t is not None)
        fenced = sum(open(p, errors="replace").read().count("took the tenant over")
                     for p in glob.glob(os.path.join(work, "*", "logs", "*")))
        if resumed:
            say(f"{held} tenants were the killed process's; resumed by the others after "
                f"p50 {resumed[len(resumed) // 2]:.1f} s, max {resumed[-1]:.1f} s "
                f"({len(takeovers) - len(resumed)} not resumed); PollSeconds {POLL}")
        say(f"overlapping passes of two live processes: {len(overlaps)}; passes ended by the fence: {fenced}")
        for o in overlaps[:5]:
            print("  overlap", o)
        if pending:
            say(f"DIFFERENT after 300 s: {' '.join(pending)}")
        else:
            say(f"all {len(tenants)} tenants equal to the source")
        ok = not pending and not overlaps and resumed and len(resumed) == len(takeovers)
        return 0 if ok else 1
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.terminate()
                p.wait()
        subprocess.run(["runuser", "-u", "postgres", "--"] * (os.getuid() == 0) +
                       [f"{PGBIN}/pg_ctl", "-D", pg, "stop", "-m", "immediate"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if not os.environ.get("KEEP"):
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
