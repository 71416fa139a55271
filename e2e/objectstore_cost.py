#!/usr/bin/env python3
"""What the content would cost in an object store beside Cassandra (issue 20, ADR 9): the same bodies
the benchmark delivers, PUT into a two-zone Garage (garagehq.deuxfleurs.fr: S3-compatible, maintained,
made for several sites) at the benchmark's rate, then deleted, as pop3d's reaper deletes content.

Two Garage nodes on loopback, zone dc1 and zone dc2, `replication_factor = 2`: a copy per zone, as the
benchmark's Cassandra keeps one replica per DC. Prints Garage's CPU per object, PUT and DELETE
latency, and the quorum each write waits for. Run through e2e/objectstore-cost, which installs Garage.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import secrets
import subprocess
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench import cpu_seconds, free_port

ZONES = {"dc1": "127.0.0.1", "dc2": "127.0.0.2"}


def body(rng: random.Random, mix: str) -> bytes:
    """A message body of the loadgen's size mix (e2e/loadgen/src/message.rs): base64 of random bytes,
    as attachments are. default: 99 % 10-100 KiB, 1 % 2-5 MiB; small: 1-4 KiB."""
    if mix == "small":
        size = rng.randint(1024, 4096)
    elif rng.random() < 0.01:
        size = rng.randint(2 << 20, 5 << 20)
    else:
        size = rng.randint(10 << 10, 100 << 10)
    return base64.encodebytes(os.urandom(size * 3 // 4))[:size]


class Garage:
    def __init__(self, binary: str, work: Path, zone: str, secret: str, peers: list[str], fsync: bool):
        ip = ZONES[zone]
        self.binary, self.zone, self.ip = binary, zone, ip
        self.rpc, self.s3, self.admin = free_port(), free_port(), free_port()
        d = work / zone
        d.mkdir()
        self.config = d / "garage.toml"
        self.config.write_text(f"""
metadata_dir = "{d}/meta"
data_dir = "{d}/data"
db_engine = "lmdb"
replication_factor = 2
consistency_mode = "consistent"
metadata_fsync = {str(fsync).lower()}
data_fsync = {str(fsync).lower()}
rpc_bind_addr = "{ip}:{self.rpc}"
rpc_public_addr = "{ip}:{self.rpc}"
rpc_bind_outgoing = true
rpc_secret = "{secret}"
bootstrap_peers = {json.dumps(peers)}

[s3_api]
s3_region = "garage"
api_bind_addr = "{ip}:{self.s3}"
root_domain = ".s3.garage.localhost"

[admin]
api_bind_addr = "127.0.0.1:{self.admin}"
admin_token = "{secrets.token_hex(16)}"
""")
        self.config.chmod(0o600)
        self.log = open(d / "garage.log", "wb")
        self.proc = subprocess.Popen([binary, "-c", str(self.config), "server"], stdout=self.log,
                                     stderr=subprocess.STDOUT, env=dict(os.environ, RUST_LOG="warn"))

    def cli(self, *args: str) -> str:
        r = subprocess.run([self.binary, "-c", str(self.config), *args], capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            raise SystemExit(f"garage {' '.join(args)}: {r.stdout}{r.stderr}")
        return r.stdout

    def node_id(self) -> str:
        for _ in range(100):
            try:
                return self.cli("node", "id", "-q").strip()
            except SystemExit:
                time.sleep(0.2)
        raise SystemExit(f"garage {self.zone} did not start: see {self.log.name}")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(15)


def cluster(binary: str, work: Path, fsync: bool) -> tuple[list[Garage], str, str]:
    """Two nodes, a layout and a key; the nodes are stopped again if any step fails."""
    nodes: list[Garage] = []
    try:
        return setup(binary, work, fsync, nodes)
    except BaseException:
        for g in nodes:
            g.stop()
        raise


def setup(binary: str, work: Path, fsync: bool, nodes: list[Garage]) -> tuple[list[Garage], str, str]:
    secret = secrets.token_hex(32)
    first = Garage(binary, work, "dc1", secret, [], fsync)
    nodes.append(first)
    n1 = first.node_id()
    second = Garage(binary, work, "dc2", secret, [n1], fsync)
    nodes.append(second)
    n2 = second.node_id()
    for attempt in range(100):  # `node id -q` (ID@ADDR) reads a key file: the server may not listen yet
        try:
            first.cli("node", "connect", n2)
            break
        except SystemExit:
            if attempt == 99:
                raise
            time.sleep(0.2)
    for g, node in ((first, n1), (second, n2)):
        first.cli("layout", "assign", "-z", g.zone, "-c", "10G", node[:64])
    first.cli("layout", "apply", "--version", "1")
    key = json.loads(first.cli("json-api", "CreateKey", json.dumps({"name": "popfleet-content"})))
    first.cli("bucket", "create", "content")
    first.cli("bucket", "allow", "--read", "--write", "--owner", "content", "--key", key["accessKeyId"])
    return nodes, key["accessKeyId"], key["secretAccessKey"]


def percentile(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p / 100 * len(xs)))] if xs else float("nan")


def load(s3, rate: float, n: int, mix: str, seed: int) -> tuple[list[float], list[float], int]:
    """Open loop: object i is due at i/rate; PUTs at that pace, then every object DELETEd at the same
    pace (the reaper's). Returns PUT and DELETE latencies (ms) and the bytes PUT."""
    rng = random.Random(seed)
    bodies = [body(rng, mix) for _ in range(n)]  # made before, not on the measured clock
    puts, deletes, lock = [], [], threading.Lock()

    def timed(out: list[float], fn, **kw) -> None:
        t0 = time.monotonic()
        fn(Bucket="content", **kw)
        with lock:
            out.append(1000 * (time.monotonic() - t0))

    with ThreadPoolExecutor(64) as pool:
        for phase, fn in ((puts, s3.put_object), (deletes, s3.delete_object)):
            start, futures = time.monotonic(), []
            for i in range(n):
                time.sleep(max(0.0, start + i / rate - time.monotonic()))
                kw = {"Key": f"m{i}"} | ({"Body": bodies[i]} if fn == s3.put_object else {})
                futures.append(pool.submit(timed, phase, fn, **kw))
            for f in futures:
                f.result()
    return puts, deletes, sum(map(len, bodies))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--garage", required=True)
    ap.add_argument("--rate", type=float, default=100)
    ap.add_argument("--duration", type=float, default=30)
    ap.add_argument("--sizes", choices=("default", "small"), default="default")
    ap.add_argument("--fsync", action="store_true", help="metadata_fsync and data_fsync (Garage's default: off)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    import boto3
    from botocore.config import Config

    with tempfile.TemporaryDirectory(prefix="popfleet-garage-") as tmp:
        nodes, key_id, key_secret = cluster(args.garage, Path(tmp), args.fsync)
        try:
            s3 = boto3.client("s3", endpoint_url=f"http://{nodes[0].ip}:{nodes[0].s3}", region_name="garage",
                              aws_access_key_id=key_id, aws_secret_access_key=key_secret,
                              config=Config(s3={"addressing_style": "path"}, max_pool_connections=64,
                                            retries={"max_attempts": 1}))
            s3.put_object(Bucket="content", Key="warm", Body=b"x")  # the layout is in force on both
            n = int(args.rate * args.duration)
            idle0 = [cpu_seconds(g.proc.pid) for g in nodes]
            time.sleep(10)  # what the two nodes burn doing nothing, to tell it from the load's cost
            idle = sum(cpu_seconds(g.proc.pid) for g in nodes) - sum(idle0)
            cpu0 = [cpu_seconds(g.proc.pid) for g in nodes]
            puts, deletes, octets = load(s3, args.rate, n, args.sizes, seed=1)
            time.sleep(5)  # background work the run left (block resync, GC of deleted blocks)
            cpu = [cpu_seconds(g.proc.pid) - c for g, c in zip(nodes, cpu0)]
        finally:
            for g in nodes:
                g.stop()
    report = {"objects": n, "sizes": args.sizes, "rate": args.rate, "mib": round(octets / 2**20, 1),
              "fsync": args.fsync, "replication_factor": 2, "write_quorum": 2,
              "garage_cpu_s": [round(c, 2) for c in cpu], "idle_cpu_s_per_10s": round(idle, 2), "cpu_ms_per_object": round(1000 * sum(cpu) / n, 2),
              "put_p50_ms": round(percentile(puts, 50), 1), "put_p99_ms": round(percentile(puts, 99), 1),
              "delete_p50_ms": round(percentile(deletes, 50), 1), "delete_p99_ms": round(percentile(deletes, 99), 1)}
    print(json.dumps(report, indent=1))
    if args.json:
        args.json.write_text(json.dumps(report) + "\n")


if __name__ == "__main__":
    main()
