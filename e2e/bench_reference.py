#!/usr/bin/env python3
"""The reference scenario on the reference topology, beside an LWT baseline (issue 16).

Two DCs of three Cassandra nodes (e2e/cassandra, POPFLEET_CASSANDRA_TOPOLOGY=seed, RF 3 per DC,
LOCAL_QUORUM), a delayed link between them. For each link delay: 80 users, 100 mail/s for 10 minutes
into dc1, then STAT of each mailbox and DELE of everything + QUIT, half the readers in dc2 (in dc2's
network namespace, on dc2's side of the link: `popfleet-load --pop3 ADDR@NETNS`); first
popfleet (a pop3d per DC, LMTP in, POP3 out), then the LWT baseline (`popfleet-load lwt-baseline`:
the same content written straight to Cassandra, each message's UID and MODSEQ allocated per mailbox
with conditional updates at SERIAL, as an LWT-based mailbox does) on the same cluster, same link,
same load. Prints one table with the reference's 73 / 85 mail/s, writes the JSON reports, and draws
delivered mail/s and p99 over time for both at every delay. Run through `e2e/bench --reference`.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import time
from pathlib import Path

from bench import HOST, PASSWORD, USER_FORMAT, cpu_seconds, free_port, stop, wait_port

REPO = Path(__file__).resolve().parents[1]
CASSANDRA = REPO / "e2e" / "cassandra"
NETNS = "popfleet-seed"
NODES = {"dc1": ["10.214.0.1", "10.214.0.2", "10.214.0.3"], "dc2": ["10.214.0.11", "10.214.0.12", "10.214.0.13"]}
STATE = Path(os.environ.get("POPFLEET_STATE", Path.home() / ".local/state/popfleet")) / "cassandra-seed"
REFERENCE = [("reference: LWT mailbox (2x3 nodes, 2 cores / 8 GB each)", 73.0),
             ("reference: same, LWTs removed from that path", 85.0)]


def seed(*args: str, check: bool = True) -> str:
    env = dict(os.environ, POPFLEET_CASSANDRA_TOPOLOGY="seed")
    r = subprocess.run([str(CASSANDRA), *args], capture_output=True, text=True, env=env, timeout=1800)
    if r.returncode != 0 and check:
        raise SystemExit(f"e2e/cassandra {' '.join(args)} failed:\n{r.stdout}\n{r.stderr}")
    return r.stdout + r.stderr


def points(dc: str) -> str:
    return ",".join(f"{ip}:9042" for ip in NODES[dc])


def node_pids() -> dict[str, int]:
    return {n: int((STATE / n / "pid").read_text()) for n in ("n1", "n2", "n3", "n4", "n5", "n6")}


def cas_total() -> int:
    return sum(int(r) + int(w) for r, w in re.findall(r"cas_read=(\d+) cas_write=(\d+)", seed("cas-counters")))


class SeedPop3d:
    """A pop3d for one DC of the seed topology; dc2's runs in dc2's namespace, on dc2's address."""

    def __init__(self, binary: str, work: Path, dc: str, keyspace: str):
        self.host = HOST if dc == "dc1" else NODES["dc2"][0]
        self.pop3, self.lmtp, self.admin = free_port(), free_port(), free_port()
        self.log = open(work / f"pop3d-{dc}.log", "wb")
        prefix = [] if dc == "dc1" else ["ip", "netns", "exec", NETNS]
        cmd = [*prefix, binary, "serve", "--data-dir", str(work / f"pop3d-{dc}"),
               "--pop3", f"{self.host}:{self.pop3}", "--lmtp", f"{self.host}:{self.lmtp}",
               "--admin", f"127.0.0.1:{self.admin}", "--max-connections", "5000",
               "--max-connections-per-ip", "5000", "--store", "cassandra", "--cassandra", points(dc),
               "--local-dc", dc, "--keyspace", keyspace]
        if dc == "dc2":
            cmd.append("--allow-insecure-auth")  # its listener is not loopback; the link is local
        env = {k: v for k, v in os.environ.items() if not k.startswith("POP3D_")}
        env["POP3D_LOG"] = "warn"
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, env=env)
        for port in (self.pop3, self.lmtp):
            wait_port_on(self.host, port, self.proc, f"pop3d {dc}")

    def stop(self) -> None:
        stop(self.proc, self.log)


def wait_port_on(host: str, port: int, proc, what: str) -> None:
    if host == HOST:
        return wait_port(port, proc, what)
    import socket
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited with {proc.returncode}")
        try:
            socket.create_connection((host, port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"{what} did not listen on {host}:{port}")


def create_users(admin_port: int, n: int) -> None:
    import urllib.request
    for i in range(n):
        req = urllib.request.Request(f"http://{HOST}:{admin_port}/users/{USER_FORMAT.format(i)}",
                                     data=json.dumps({"password": PASSWORD}).encode(), method="PUT",
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as r:
            assert r.status in (200, 201), r.status


def common(args, label: str, json_path: Path) -> list[str]:
    return ["--label", label, "--users", str(args.users), "--user-format", USER_FORMAT,
            "--rate", str(args.rate), "--duration", str(args.duration), "--sizes", args.sizes,
            "--concurrency", str(args.concurrency), "--json", str(json_path)]


def measured(fn, json_path: Path):
    """Runs fn() and returns its report with the CPU % of each Cassandra node over the run and the CAS
    requests; those two also go to LABEL.measured.json beside the report, for --reuse."""
    pids = node_pids()
    cas0, cpu0, t0 = cas_total(), {n: cpu_seconds(p) for n, p in pids.items()}, time.monotonic()
    report = fn()
    wall = time.monotonic() - t0
    extra = {"node_cpu_pct": {n: round(100 * (cpu_seconds(p) - cpu0[n]) / wall, 1) for n, p in pids.items()},
             "cas_requests": cas_total() - cas0}
    json_path.with_suffix(".measured.json").write_text(json.dumps(extra) + "\n")
    return report | extra


def reused(args, json_path: Path) -> dict | None:
    """With --reuse, a run already made into --out (its report and its .measured.json) is not run again."""
    if not (args.reuse and have_run(json_path)):
        return None
    side = json_path.with_suffix(".measured.json")
    report = json.loads(json_path.read_text().splitlines()[-1])
    # The table's heading states one scenario for every row: a run of another one may not join it.
    want = {"duration_s": args.duration, "users": args.users, "target_rate": args.rate, "size_mix": args.sizes}
    if any(report.get(k) != v for k, v in want.items()):
        raise SystemExit(f"{json_path} was made with { {k: report.get(k) for k in want} }, not {want}: "
                         "remove it or run without --reuse")
    print(f"\n==> {json_path.stem}: reusing {json_path} and {side.name}", flush=True)
    return report | json.loads(side.read_text())


def have_run(json_path: Path) -> bool:
    return json_path.exists() and json_path.with_suffix(".measured.json").exists()


def fresh(json_path: Path) -> None:
    """A run about to be made: no report or measurement of an earlier one may be left to pair with it."""
    json_path.unlink(missing_ok=True)
    json_path.with_suffix(".measured.json").unlink(missing_ok=True)


def run_popfleet(args, delay: int, out: Path) -> dict:
    if (report := reused(args, out / f"popfleet-{delay}ms.json")) is not None:
        return report
    keyspace = f"popfleet_reference_{delay}ms_{int(time.time())}"
    subprocess.run([args.pop3d, "migrate", "--cassandra", points("dc1"), "--local-dc", "dc1", "--keyspace", keyspace,
                    "--replication", "dc1:3,dc2:3"], check=True)
    dc1 = SeedPop3d(args.pop3d, out, "dc1", keyspace)
    try:
        dc2 = SeedPop3d(args.pop3d, out, "dc2", keyspace)
    except BaseException:
        dc1.stop()
        raise
    try:
        create_users(dc1.admin, args.users)
        time.sleep(5)  # the accounts reach dc2 before its readers log in
        label = f"popfleet-{delay}ms"
        json_path = out / f"{label}.json"
        fresh(json_path)
        cmd = [args.loadgen, "run", *common(args, label, json_path), "--password", PASSWORD,
               "--lmtp", f"{HOST}:{dc1.lmtp}", "--pop3", f"{HOST}:{dc1.pop3},{dc2.host}:{dc2.pop3}@{NETNS}", "--settle", str(args.settle)]
        print(f"\n==> {label}: {' '.join(cmd)}", flush=True)
        return measured(lambda: (subprocess.run(cmd, check=True), json.loads(json_path.read_text().splitlines()[-1]))[1],
                        json_path)
    finally:
        dc1.stop()
        dc2.stop()


def run_baseline(args, delay: int, out: Path) -> dict:
    label = f"lwt-baseline-{delay}ms"
    json_path = out / f"{label}.json"
    if (report := reused(args, json_path)) is not None:
        return report
    fresh(json_path)
    cmd = [args.loadgen, "lwt-baseline", *common(args, label, json_path), "--cassandra", points("dc1"),
           "--dc", "dc1", "--read-cassandra", points("dc2"), "--read-dc", "dc2", "--read-netns", NETNS,
           "--keyspace", "popfleet_lwt_baseline", "--replication", "dc1:3,dc2:3", "--reset", "--settle", str(args.settle)]
    print(f"\n==> {label}: {' '.join(cmd)}", flush=True)
    return measured(lambda: (subprocess.run(cmd, check=True), json.loads(json_path.read_text().splitlines()[-1]))[1],
                    json_path)


def fmt(v, spec=".1f") -> str:
    return "-" if v is None else format(v, spec)


def table(rows: list[tuple[str, dict]], args) -> str:
    head = (f"{'run':<52} {'s':>4} {'mail/s':>7} {'LMTP p50':>9} {'p99':>8} {'max':>8} {'POP3 p50':>9} {'p99':>8} "
            f"{'errors':>7} {'serial t/o':>15} {'CAS req':>8}  Cassandra CPU % n1..n6")
    lines = [f"offered {args.rate:g} mail/s to {args.users} users, sizes {args.sizes}", head]
    for name, rate in REFERENCE:
        lines.append(f"{name:<52} {600:>4} {rate:>7.1f}")
    for name, r in rows:
        lmtp, pop3 = r.get("lmtp") or {}, r.get("pop3_session") or {}
        errors = r.get("errors") or {}
        serial = sum(v for k, v in errors.items() if "serial" in k.lower())
        cpu = " ".join(f"{v:.0f}" for v in r.get("node_cpu_pct", {}).values())
        lines.append(f"{name:<52} {r.get('duration_s', 0):>4.0f} {r['delivered_per_s']:>7.1f} {fmt(lmtp.get('p50_ms')):>9} {fmt(lmtp.get('p99_ms')):>8} "
                     f"{fmt(lmtp.get('max_ms')):>8} {fmt(pop3.get('p50_ms')):>9} {fmt(pop3.get('p99_ms')):>8} "
                     f"{sum(errors.values()):>7} {serial:>15} {r.get('cas_requests', 0):>8}  {cpu}  found {r.get('messages_found')}/{r.get('delivered')}")
    return "\n".join(lines)


def chart(rows: list[tuple[str, dict]], path: Path) -> None:
    """Delivered mail/s and p99 per interval, one line per run, one column per link delay (needs
    matplotlib; skipped without)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("bench: matplotlib missing, no chart")
        return
    delays = list(dict.fromkeys(name.rsplit(", ", 1)[-1] for name, _ in rows))
    fig, axes = plt.subplots(2, len(delays), figsize=(6 * len(delays), 6), sharex="col", sharey="row", squeeze=False)
    for col, delay in enumerate(delays):
        rate_ax, p99_ax = axes[0][col], axes[1][col]
        for name, r in rows:
            if not name.endswith(delay):
                continue
            tl = r.get("timeline") or []
            # The last interval after the offered duration is partial (stragglers): a false drop.
            if tl and tl[-1]["t_s"] >= r.get("duration_s", float("inf")):
                tl = tl[:-1]
            xs = [p["t_s"] for p in tl]
            rate_ax.plot(xs, [p["delivered_per_s"] for p in tl], label=name.rsplit(", ", 1)[0])
            p99_ax.plot(xs, [p["p99_ms"] for p in tl], label=name.rsplit(", ", 1)[0])
        rate_ax.set_title(delay)
        p99_ax.set_yscale("log")
        p99_ax.set_xlabel("seconds into the delivery phase")
        rate_ax.legend(fontsize=7)
    axes[0][0].set_ylabel("delivered mail/s")
    axes[1][0].set_ylabel("delivery p99 ms")
    fig.tight_layout()
    fig.savefig(path)
    fig.savefig(path.with_suffix(".png"), dpi=80)
    print(f"chart: {path}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pop3d", required=True)
    ap.add_argument("--loadgen", required=True)
    ap.add_argument("--users", type=int, default=80)
    ap.add_argument("--rate", type=float, default=100)
    ap.add_argument("--duration", type=float, default=600)
    ap.add_argument("--sizes", default="default")
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--delays", default="1,30",
                    help="one-way link delays in ms, one run of each target per delay; DELAY:SECONDS overrides "
                         "--duration for that delay")
    ap.add_argument("--settle", type=float, default=15,
                    help="seconds between deliveries and reads, so dc2's readers see what dc1 took in")
    ap.add_argument("--targets", default="popfleet,lwt-baseline")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--reuse", action="store_true",
                    help="take a run already in --out (LABEL.json and LABEL.measured.json) instead of running it "
                         "again: runs of another day at another delay, in one table and chart")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    full_duration = args.duration
    for spec in args.delays.split(","):
        delay = int(spec.split(":")[0])
        args.duration = float(spec.split(":")[1]) if ":" in spec else full_duration
        labels = [f"{t}-{delay}ms" for t in ("popfleet", "lwt-baseline") if t in args.targets]
        # The cluster only for runs to make: with --reuse and every report there, just the table and chart.
        if not (args.reuse and all(have_run(args.out / f"{x}.json") for x in labels)):
            seed("up")
            seed("link-delay", str(delay))
            print(seed("status", check=False), flush=True)  # printed for the record; the runs decide
        if "popfleet" in args.targets:
            rows.append((f"popfleet, link {delay} ms", run_popfleet(args, delay, args.out)))
        if "lwt-baseline" in args.targets:
            rows.append((f"LWT baseline, link {delay} ms", run_baseline(args, delay, args.out)))
        summary = table(rows, args)
        print("\n" + summary, flush=True)
        # After every delay, so a later failure does not lose the runs already made.
        (args.out / "reference.txt").write_text(summary + "\n")
        (args.out / "reference.json").write_text(json.dumps(dict(rows), indent=1))
    if (STATE / "link-delay-ms").exists():  # the link is up: back to the default delay
        seed("link-delay", "1")
    chart(rows, args.out / "reference.svg")
    print(f"\n{summary}\n\nreports in {args.out}")


if __name__ == "__main__":
    main()
