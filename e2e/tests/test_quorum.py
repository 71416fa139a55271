"""Quorum faults on the reference topology (issue 16).

Two datacenters of three Cassandra nodes, replication dc1:3, dc2:3, LOCAL_QUORUM, joined by one link
that delays every packet (e2e/cassandra with POPFLEET_CASSANDRA_TOPOLOGY=seed). dc1's pop3d and
clients run on the host next to n1-n3; dc2's run in the namespace popfleet-seed next to n4-n6, as
clients local to dc2 would. Every test runs under ledgered popfleet-load and POP3 readers that
delete and QUIT: nothing acknowledged may be lost, stored twice or come back after a QUIT.

Run with `e2e/run-e2e --seed` (e2e/test-all --seed); the module starts the six nodes itself and
stops them at the end (six JVMs leave little of two cores for anything else).
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import time
from collections import Counter

import pytest

from conftest import LmtpRaw, clean_env, server_binary
from test_faults_cassandra import assert_deferred, cassandra, eventually
from test_faults_load import Load, Reader, all_tokens, ledger_check, make_users, mailbox_tokens, phase

pytestmark = pytest.mark.seed

NETNS = "popfleet-seed"
IN_DC2 = ["ip", "netns", "exec", NETNS]
NODES = {"dc1": {"n1": "10.214.0.1", "n2": "10.214.0.2", "n3": "10.214.0.3"},
         "dc2": {"n4": "10.214.0.11", "n5": "10.214.0.12", "n6": "10.214.0.13"}}
IP_OF = {n: ip for dc in NODES.values() for n, ip in dc.items()}
KEYSPACE = "popfleet_quorum"


def seed(*args: str) -> str:
    return cassandra(*args, topology="seed", timeout=1800)


def seed_store(dc: str) -> list[str]:
    points = ",".join(f"{ip}:9042" for ip in NODES[dc].values())
    # The default --cassandra-timeout-ms: it leaves room for the retry of a read whose replica died.
    return ["--store", "cassandra", "--cassandra", points, "--local-dc", dc, "--keyspace", KEYSPACE]


class CasLedger:
    """Paxos (CAS) requests coordinated by each node over the whole module. A node's counters restart
    at zero with the node, so a node is read just before it is stopped and counted from zero after."""

    def __init__(self):
        self.base = self.read()
        self.per_node: dict[str, int] = {}

    @staticmethod
    def read() -> dict[str, int]:
        out = seed("cas-counters")
        counts = {}
        for ip, r, w in re.findall(r"^(\S+) cas_read=(\d+) cas_write=(\d+)$", out, re.M):
            counts[ip] = int(r) + int(w)
        assert set(counts) == set(IP_OF.values()), f"cas-counters did not read all six nodes:\n{out}"
        return counts

    def add(self, now: dict[str, int], ips) -> None:
        for ip in ips:
            # A counter below its base means the node restarted unseen: its count is lost, say so.
            assert now[ip] >= self.base[ip], f"{ip} restarted without the test knowing: its Paxos count is lost"
            self.per_node[ip] = self.per_node.get(ip, 0) + now[ip] - self.base[ip]

    def stop(self, *nodes: str) -> None:
        """Read, then kill: a Paxos request in the seconds between would go uncounted, but the
        product has no code that issues one (e2e/lint-no-lwt), so this only guards a regression."""
        ips = [IP_OF[n] for n in nodes]
        self.add(self.read(), ips)
        for n in nodes:
            seed("stop", n, "--kill")
        for ip in ips:
            self.base[ip] = 0

    def final(self) -> dict[str, int]:
        self.add(self.read(), IP_OF.values())
        return self.per_node


@pytest.fixture(scope="module")
def cluster():
    if os.geteuid() != 0 or not shutil.which("ip") or not shutil.which("iptables"):
        pytest.fail("the seed topology needs root, iproute2 and iptables", pytrace=False)
    seed("up")
    r = subprocess.run([server_binary(), "migrate", "--cassandra", f"{NODES['dc1']['n1']}:9042", "--local-dc",
                        "dc1", "--keyspace", KEYSPACE, "--replication", "dc1:3,dc2:3"],
                       capture_output=True, text=True, timeout=600, env=clean_env())
    assert r.returncode == 0, r.stdout + r.stderr
    cas = CasLedger()
    yield cas
    seed("heal")
    seed("link-delay", os.environ.get("POPFLEET_LINK_DELAY_MS", "1"))
    if os.environ.get("POPFLEET_SEED_KEEP") != "1":
        seed("down")


def start_pair(server_factory):
    dc1 = server_factory(name="dc1", store_args=seed_store("dc1"), args=["--auth-fail-delay-ms", "0"])
    # dc2 listens on an address of its side of the link, not loopback: cleartext logins are allowed
    # explicitly (the link exists only on this machine).
    dc2 = server_factory(name="dc2", store_args=seed_store("dc2"),
                         args=["--auth-fail-delay-ms", "0", "--allow-insecure-auth"],
                         host=NODES["dc2"]["n4"], prefix=IN_DC2)
    return dc1, dc2


def users_per_dc(dc1, tag: str) -> tuple[dict, list]:
    """Four users delivered to and read in each DC, and all eight."""
    mine = {dc: make_users(dc1, 4, f"{tag}-{dc}") for dc in ("dc1", "dc2")}
    return mine, mine["dc1"] + mine["dc2"]


def replicated(dc2, users) -> None:
    eventually(lambda: mailbox_tokens(dc2, *users[-1]) == Counter(), 60, "accounts replicated to dc2")


def converged(dc1, dc2, users, loads, readers, name: str, timeout: float = 300) -> dict:
    """Both DCs list the same mail (hints and read repair done), then the ledger over all of it."""
    acked = sum((load.acked() for load in loads), Counter())
    committed = set().union(*(r.committed for r in readers))
    maybe = set().union(*(r.maybe for r in readers))

    def same():
        a, b = all_tokens(dc1, users), all_tokens(dc2, users)
        missing = [k for k in acked if a[k] == 0 and k not in committed and k not in maybe]
        assert a == b, f"dc1 and dc2 differ: {len(set(a) ^ set(b))} messages"
        assert not missing, f"{len(missing)} acknowledged messages not listed yet"
        return ("converged", a)
    _, found = eventually(same, timeout, "both DCs agree", interval=5)
    return ledger_check(name, acked, found, committed, maybe)


def run_loads(dc1, dc2, mine: dict, tmp_path, seconds: float, rate: float = 10):
    """Each DC delivers to and reads its own half of the users: its transactions then need only its own
    quorum. (A reader in one DC of mail just delivered in the other may find the listing row before
    the content, more often while a node's death delays replication: that is -ERR [SYS/TEMP] and a
    retry by design, ADR 5 and server/pop3.rs missing_content, not a failed quorum.)"""
    loads = [Load(dc1, mine["dc1"], rate=rate, seconds=seconds, tmp=tmp_path),
             Load(dc2, mine["dc2"], rate=rate, seconds=seconds, tmp=tmp_path, prefix=IN_DC2)]
    # A client's patience above pop3d's: a login or TOP may make two reads that each meet the dead
    # replica before Cassandra marks it down (5 s timeout, then the retry), within --cassandra-timeout-ms.
    readers = [Reader(dc1, mine["dc1"], timeout=30), Reader(dc2, mine["dc2"], netns=NETNS, timeout=30)]
    for r in readers:
        r.start()
    return loads, readers


def no_failed_sessions(dc: str, r) -> None:
    """The reader ran (some sessions committed) and none failed, at QUIT included."""
    assert r.sessions["committed"] > 0, f"{dc}: {dict(r.sessions)}"
    bad = {k: r.sessions[k] for k in ("failed", "QUIT -ERR", "cut at QUIT") if r.sessions[k]}
    assert not bad, f"{dc} POP3 sessions failed: {bad} {dict(r.errors)}"


def repair_after_crash(dc1, dc2, users, hints_for: float = 90) -> None:
    """What the README tells an operator to do after a node crashed: run a full repair. Hints cannot
    always make the DCs agree: a coordinator killed with its node takes the hints it held for the
    other DC with it (its own DC's quorum had acknowledged; the other DC's copy was in flight), and
    LOCAL_QUORUM reads never look across. Then one DC lacks a message, or lists one whose content it
    lacks (TOP: -ERR [SYS/TEMP], content not here yet). Waits `hints_for` seconds for the hints first
    and says what only the repair fixed."""

    def agree():
        a, b = all_tokens(dc1, users), all_tokens(dc2, users)
        assert a == b, f"{len(set(a) ^ set(b))} messages in one DC only"
        return True
    try:
        eventually(agree, hints_for, "both DCs agree through hints alone", interval=5)
        print("\nafter the crash: both DCs agreed through hints alone")
        return
    except pytest.fail.Exception as e:
        print(f"\nafter the crash: {e}; nodetool repair --full")
    # n1 replicates every range at RF 3 on three nodes per DC, so its repair covers the keyspace in
    # both DCs; nodetool exits non-zero (and the helper fails the test) if the repair fails.
    out = seed("nodetool", "n1", "repair", "--full", KEYSPACE)
    print(out.strip().splitlines()[-1] if out.strip() else "(no output)")


def finish(loads, readers) -> list[dict]:
    reports = [load.wait() for load in loads]
    for r in readers:
        assert r.is_alive(), "a POP3 reader thread died (see the warnings): its counts would mean nothing"
        r.stop.set()
        r.join(60)
    return reports


def test_one_node_of_three_killed_in_each_dc(server_factory, tmp_path, cluster):
    dc1, dc2 = start_pair(server_factory)
    mine, users = users_per_dc(dc1, "quorum")
    replicated(dc2, users)
    seconds = phase(45)
    loads, readers = run_loads(dc1, dc2, mine, tmp_path, seconds)
    time.sleep(seconds * 0.25)
    cluster.stop("n2", "n5")  # kill -9: a crash, not a drain
    reports = finish(loads, readers)
    # The quorum of two holds in each DC: not one transaction failed, on either protocol.
    for dc, report in zip(("dc1", "dc2"), reports):
        assert report["delivered"] > 0 and report["errors"] == {}, f"{dc} deliveries failed: {report['errors']}"
    for dc, r in zip(("dc1", "dc2"), readers):
        no_failed_sessions(dc, r)
    seed("up")  # n2 and n5 back; hints replay what they missed
    repair_after_crash(dc1, dc2, users)
    converged(dc1, dc2, users, loads, readers, "one node of three killed in each DC")


def test_two_nodes_of_dc1_down(server_factory, tmp_path, cluster):
    dc1, dc2 = start_pair(server_factory)
    users = make_users(dc1, 8, "noquorum")
    replicated(dc2, users)
    seconds = phase(45)
    load = Load(dc2, users, rate=10, seconds=seconds, tmp=tmp_path, prefix=IN_DC2)
    reader = Reader(dc2, users, netns=NETNS, timeout=30)
    reader.start()
    time.sleep(seconds * 0.2)
    cluster.stop("n1", "n2")
    time.sleep(3)
    # dc1 has one replica of three: no quorum. Temporary errors only, never a wrong answer.
    for _ in range(3):
        with dc1.pop3() as p:
            p.cmd(f"USER {users[0][0]}")
            reply = p.cmd(f"PASS {users[0][1]}")
            assert reply.startswith(b"-ERR [SYS/TEMP]"), reply
    with LmtpRaw(dc1.lmtp_port) as c:
        assert c.lhlo()[0] == 250
        assert_deferred(c, users[0][0])
    report = finish([load], [reader])[0]
    assert report["delivered"] > 0 and report["errors"] == {}, f"dc2 failed while dc1 lost its quorum: {report['errors']}"
    no_failed_sessions("dc2", reader)
    seed("up")
    converged(dc1, dc2, users, [load], [reader], "two nodes of dc1 down, dc2 serving")


def test_link_cut_for_a_minute_on_the_wan_profile(server_factory, tmp_path, cluster):
    seed("link-delay", "30")
    dc1, dc2 = start_pair(server_factory)
    mine, users = users_per_dc(dc1, "wancut")
    replicated(dc2, users)
    cut_for = phase(60)
    seconds = cut_for + 30
    loads, readers = run_loads(dc1, dc2, mine, tmp_path, seconds)
    time.sleep(10)
    seed("partition")
    # The cut is real: dc1's side cannot reach dc2's pop3d.
    with pytest.raises(OSError):
        socket.create_connection((NODES["dc2"]["n4"], dc2.pop3_port), timeout=3)
    time.sleep(cut_for)
    seed("heal")
    reports = finish(loads, readers)
    # Each DC holds its own quorum: the cut costs no transaction on either side.
    for dc, report in zip(("dc1", "dc2"), reports):
        assert report["delivered"] > 0 and report["errors"] == {}, f"{dc} deliveries failed: {report['errors']}"
    for dc, r in zip(("dc1", "dc2"), readers):
        no_failed_sessions(dc, r)
    converged(dc1, dc2, users, loads, readers, "link cut for a minute, 30 ms each way", timeout=600)
    seed("link-delay", "1")


def test_no_lightweight_transaction_on_any_node(cluster):
    """Last in the module: the Paxos counters of all six nodes over every test above."""
    per_node = cluster.final()
    print(f"\nPAXOS requests per node over the module: {per_node}")
    assert set(per_node) == set(IP_OF.values()) and not any(per_node.values()), per_node
