#!/usr/bin/env python3
"""A CPU flame graph of pop3d under the benchmark's load: one pop3d (embedded store, or dc1's
on the two-DC Cassandra), the same popfleet-load run as e2e/bench, `perf record` with DWARF
call graphs on the pop3d process for the delivery and read halves, folded and drawn by inferno.

Writes to --out: perf.data, folded.txt (one stack per line with its sample count), pop3d.svg and
costs.txt, the shares of CPU by crate (where the leaf frame's code comes from) and by the pop3d
and library frames that hold the most samples inclusively. Run through e2e/flamegraph.
"""

from __future__ import annotations

import argparse
import collections
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402  (the bench's pop3d launcher and load generator call)

# Frames that say where time went in pop3d's terms, looked up inclusively (a sample counts once
# per frame name however deep the recursion).
INCLUSIVE = [
    ("store calls on blocking threads (embedded: redb)", r"BlockingTask<pop3d::store"),
    ("redb write transaction commit", r"redb::transactions::WriteTransaction::commit"),
    ("redb, all", r"redb::"),
    ("content chunk writes (put_chunk)", r"::put_chunk"),
    ("LMTP session driver", r"pop3d::server::lmtp::"),
    ("POP3 session driver", r"pop3d::server::pop3::"),
    ("delivery (server::delivery)", r"pop3d::server::delivery"),
    ("argon2 (password hash)", r"argon2::"),
    ("scylla driver", r"scylla::"),
    ("TLS (rustls)", r"rustls::"),
    ("SHA-256 (dedup key, SCRAM)", r"sha2::"),
    ("context switches (thread hand-offs)", r"finish_task_switch"),
    ("kernel: network", r"tcp_|sock_|inet_|__sys_sendto|__sys_recvfrom"),
    ("memcpy/memmove", r"__memmove|__memcpy|memcpy"),
    ("allocator", r"malloc|_int_free|realloc|tcache_"),
]


def crate_of(frame: str) -> str:
    frame = re.sub(r"^<|^_<", "", frame)
    if "::" in frame:
        return frame.split("::", 1)[0].lstrip("<")
    if frame.startswith("[") or frame.endswith("_[k]") or frame.islower() and "_" in frame:
        return "kernel/libc"
    return "other"


def costs(folded: Path) -> str:
    total = 0
    by_crate: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    for line in folded.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        count = int(n)
        frames = stack.split(";")
        total += count
        by_crate[crate_of(frames[-1])] += count
        for name, pattern in INCLUSIVE:
            if any(re.search(pattern, f) for f in frames):
                inclusive[name] += count
    if total == 0:
        return "no samples\n"
    # perf's sample weight is its period: nanoseconds with the cpu-clock event, cycles with a
    # hardware counter; only the shares are compared.
    out = [f"total sample weight {total} (perf period) over pop3d's threads\n", "self time by crate of the leaf frame:"]
    out += [f"  {100 * c / total:5.1f} %  {name}" for name, c in by_crate.most_common(12)]
    out.append("inclusive time (a sample counts once per line):")
    out += [f"  {100 * c / total:5.1f} %  {name}" for name, c in inclusive.most_common()]
    return "\n".join(out) + "\n"


def record(args, pid: int, out: Path) -> subprocess.Popen:
    # DWARF unwinding: the release build keeps debug info but no frame pointers.
    return subprocess.Popen(["perf", "record", "-F", str(args.frequency), "--call-graph", "dwarf,16384",
                             "-p", str(pid), "-o", str(out / "perf.data")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)


def fold_and_draw(args, out: Path) -> None:
    script = subprocess.Popen(["perf", "script", "-i", str(out / "perf.data")], stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL)
    with open(out / "folded.txt", "wb") as folded:
        subprocess.run([args.collapse], stdin=script.stdout, stdout=folded, check=True)
    script.wait()
    title = f"pop3d ({args.store}), {args.rate:g} mail/s, {args.sizes} sizes, {args.duration:g} s + read half"
    with open(out / "folded.txt", "rb") as folded, open(out / "pop3d.svg", "wb") as svg:
        subprocess.run([args.flamegraph, "--title", title, "--width", "1400", "--minwidth", "0.5"], stdin=folded, stdout=svg,
                       check=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pop3d", required=True)
    ap.add_argument("--loadgen", required=True)
    ap.add_argument("--collapse", required=True, help="inferno-collapse-perf")
    ap.add_argument("--flamegraph", required=True, help="inferno-flamegraph")
    ap.add_argument("--store", choices=["embedded", "cassandra"], default="embedded")
    ap.add_argument("--users", type=int, default=80)
    ap.add_argument("--rate", type=float, default=100)
    ap.add_argument("--duration", type=float, default=30)
    ap.add_argument("--sizes", default="default")
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--frequency", type=int, default=199, help="perf samples per second per thread")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    args.search, args.retr, args.quiet, args.warmup = False, False, True, 5
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="popfleet-flame-"))
    if args.store == "embedded":
        store = ["--store", "embedded"]
    else:
        ks = f"popfleet_flame_{int(time.time())}"
        subprocess.run([args.pop3d, "migrate", "--cassandra", f"{bench.HOST}:9042", "--local-dc", "dc1",
                        "--keyspace", ks, "--replication", "dc1:1,dc2:1"], check=True, stdout=subprocess.DEVNULL)
        store = ["--store", "cassandra", "--keyspace", ks, "--cassandra", "127.0.0.1:9042", "--local-dc", "dc1"]
    srv = bench.Pop3d(args.pop3d, work, "pop3d", store)
    try:
        srv.create_users(args.users + 1)
        bench.warm_up(args, "flame", [srv.lmtp], [srv.pop3], [srv.proc.pid], work)
        perf = record(args, srv.proc.pid, out)
        time.sleep(1)
        report = bench.loadgen(args, "flame", [srv.lmtp], [srv.pop3], [srv.proc.pid], work)
        perf.send_signal(signal.SIGINT)
        perf.wait(timeout=120)
    finally:
        srv.stop()
    fold_and_draw(args, out)
    summary = costs(out / "folded.txt")
    delivered = report.get("delivered")
    text = f"{' '.join(sys.argv)}\ndelivered {delivered}, errors {report.get('errors')}\n{summary}"
    (out / "costs.txt").write_text(text)
    print(text)
    print(f"flame graph: {out / 'pop3d.svg'}")


if __name__ == "__main__":
    main()
