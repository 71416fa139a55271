#!/usr/bin/env python3
"""What one delivery and one deletion cost Cassandra, counted rather than guessed (ADR 0009).

On the loopback two-DC Cassandra (e2e/cassandra up; RF dc1:1, dc2:1 in a keyspace of its own,
dropped at the end) with one pop3d in dc1: N deliveries over LMTP without Message-ID, N with one
(the dedup read and record, ADR 0008), then one POP3 session that deletes them all. Before and after
each phase, `nodetool tablestats` of both nodes: the local read and write counts per table (a write
count is one mutation of one partition applied on that replica) and, after a flush, the live bytes.

    e2e/cassandra_cost.py --pop3d $CARGO_TARGET_DIR/release/pop3d [--n 200] [--size 20000]
"""

from __future__ import annotations

import argparse
import base64
import os
import poplib
import re
import smtplib
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import HOST, PASSWORD, USER_FORMAT, Pop3d

REPO = Path(__file__).resolve().parents[1]
TABLES = ["accounts", "listing", "content", "mailbox_state", "recent_deliveries"]


def tablestats(node: str, ks: str, flush: bool = False) -> dict[str, dict[str, int]]:
    cas = str(REPO / "e2e/cassandra")
    if flush:
        subprocess.run([cas, "nodetool", node, "flush", ks], check=True, capture_output=True)
    for attempt in range(3):  # a nodetool JVM on a busy machine sometimes misses its JMX connection
        r = subprocess.run([cas, "nodetool", node, "tablestats", ks], capture_output=True, text=True)
        if r.returncode == 0:
            break
        time.sleep(2)
    else:
        raise SystemExit(f"nodetool {node} tablestats {ks} failed:\n{r.stdout}\n{r.stderr}")
    out = r.stdout
    stats: dict[str, dict[str, int]] = {}
    table = None
    for line in out.splitlines():
        line = line.strip()
        if m := re.match(r"Table: (\w+)", line):
            table = m.group(1)
            stats[table] = {}
        elif table and (m := re.match(r"(Local read count|Local write count|Space used \(live\)): (\d+)", line)):
            stats[table][m.group(1)] = int(m.group(2))
    return stats


def snapshot(ks: str, flush: bool = False) -> dict[str, dict]:
    return {n: tablestats(n, ks, flush) for n in ("n1", "n2")}


def diff(a: dict, b: dict, n: int) -> str:
    lines = [f"{'table':<20}{'node':>5}{'writes':>8}{'reads':>7}{'writes/op':>11}{'reads/op':>10}{'live bytes/op':>15}"]
    for node in ("n1", "n2"):
        for t in TABLES:
            x, y = a[node].get(t, {}), b[node].get(t, {})
            w = y.get("Local write count", 0) - x.get("Local write count", 0)
            r = y.get("Local read count", 0) - x.get("Local read count", 0)
            s = y.get("Space used (live)", 0) - x.get("Space used (live)", 0)
            if w or r or s:
                lines.append(f"{t:<20}{node:>5}{w:>8}{r:>7}{w / n:>11.3f}{r / n:>10.3f}{s / n:>15.0f}")
    return "\n".join(lines)


def deliver(port: int, rcpt: str, n: int, size: int, message_id: bool, tag: str) -> None:
    # base64 of random bytes, as an attachment is: it does not compress away as a repeated byte would
    raw = base64.b64encode(os.urandom(size * 3 // 4)).decode()
    body = "\r\n".join(raw[i:i + 76] for i in range(0, len(raw), 76)) + "\r\n"
    with smtplib.LMTP(HOST, port) as lmtp:
        for i in range(n):
            head = f"From: <cost@example.com>\r\nTo: <{rcpt}>\r\nSubject: cost {tag} {i}\r\n"
            if message_id:
                head += f"Message-ID: <{tag}-{i}@cost.example>\r\n"
            lmtp.sendmail("cost@example.com", [rcpt], head + "\r\n" + body)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pop3d", required=True)
    ap.add_argument("--n", type=int, default=200, help="deliveries per phase")
    ap.add_argument("--size", type=int, default=20000, help="message body octets (one 64 KiB chunk below 64 KiB)")
    args = ap.parse_args()
    ks = f"popfleet_cost_{int(time.time())}"
    subprocess.run([args.pop3d, "migrate", "--cassandra", f"{HOST}:9042", "--local-dc", "dc1", "--keyspace", ks,
                    "--replication", "dc1:1,dc2:1"], check=True, stdout=subprocess.DEVNULL)
    work = Path(tempfile.mkdtemp(prefix="popfleet-cost-"))
    srv = Pop3d(args.pop3d, work, "dc1", ["--store", "cassandra", "--keyspace", ks, "--cassandra",
                                          f"{HOST}:9042", "--local-dc", "dc1"])
    user, password = USER_FORMAT.format(0), PASSWORD
    try:
        srv.create_users(1)
        deliver(srv.lmtp, user, 1, args.size, False, "prime")  # the account into pop3d's cache
        s0 = snapshot(ks, flush=True)
        deliver(srv.lmtp, user, args.n, args.size, False, "plain")
        s1 = snapshot(ks, flush=True)
        deliver(srv.lmtp, user, args.n, args.size, True, "mid")
        s2 = snapshot(ks, flush=True)
        pop = poplib.POP3(HOST, srv.pop3)
        pop.user(user)
        pop.pass_(password)
        count, _ = pop.stat()
        for i in range(1, count + 1):
            pop.dele(i)
        pop.quit()
        time.sleep(3)  # the reaper deletes content after the reply
        s3 = snapshot(ks, flush=True)
        print(f"keyspace {ks}, body {args.size} octets, {args.n} deliveries per phase, "
              "counts per operation (writes: mutations applied on that node)")
        print(f"\n== delivery without Message-ID\n{diff(s0, s1, args.n)}")
        print(f"\n== delivery with Message-ID\n{diff(s1, s2, args.n)}")
        print(f"\n== deletion (one session: login, DELE of {count}, QUIT), per message\n{diff(s2, s3, count)}")
    finally:
        srv.stop()
        subprocess.run([str(REPO / "e2e/cassandra"), "cqlsh", "n1", "-e", f"DROP KEYSPACE IF EXISTS {ks}"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


if __name__ == "__main__":
    sys.exit(main())
