"""A real network partition between the datacenters (issue 8, scenario 3).

A cluster of its own (e2e/cassandra with POPFLEET_CASSANDRA_TOPOLOGY=netns): n1 (dc1) on the host at
10.213.0.1, n2 (dc2) in the network namespace popfleet-dc2 at 10.213.0.2, one veth link between them.
dc1's pop3d runs on the host; dc2's pop3d, its LMTP load and its POP3 reader run inside the
namespace, as clients local to dc2 would. Under steady load on both sides the link is cut, both
sides keep serving, the link comes back, and the ledger check runs once both DCs agree:
nothing acknowledged is lost, nothing is stored twice, nothing QUIT-deleted on either side comes back.

With a watermark margin shorter than the partition, mail that crossed late hides below a read
watermark (ADR 5) until `pop3d repair` lowers it; the second case proves that path end to end.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import threading
import time
from collections import Counter

import pytest

from conftest import clean_env, make_message, server_binary, token_of
from test_faults_cassandra import cassandra, eventually, tokens_in
from test_faults_load import Load, Reader, all_tokens, enter_netns, ledger_check, make_users, phase

pytestmark = pytest.mark.faults

NETNS = "popfleet-dc2"
NODE = {"dc1": "10.213.0.1", "dc2": "10.213.0.2"}
KEYSPACE = "popfleet_partition"
IN_DC2 = ["ip", "netns", "exec", NETNS]


def split(*args: str) -> str:
    """e2e/cassandra on the netns topology."""
    return cassandra(*args, topology="netns")


def split_store(dc: str, *extra: str) -> list[str]:
    return ["--store", "cassandra", "--cassandra", f"{NODE[dc]}:9042", "--local-dc", dc,
            "--keyspace", KEYSPACE, "--cassandra-timeout-ms", "2000", *extra]


@pytest.fixture(scope="module")
def split_cluster():
    if os.geteuid() != 0 or not shutil.which("ip"):
        pytest.fail("the partition test needs root and iproute2 (network namespace and veth)", pytrace=False)
    split("up")
    r = subprocess.run([server_binary(), "migrate", "--cassandra", f"{NODE['dc1']}:9042", "--local-dc", "dc1",
                        "--keyspace", KEYSPACE, "--replication", "dc1:1,dc2:1"],
                       capture_output=True, text=True, timeout=300, env=clean_env())
    assert r.returncode == 0, r.stdout + r.stderr
    yield
    split("heal")
    split("down")  # four JVMs on two cores is too many for the steps after this one


def in_dc2(fn):
    """fn() run on a thread inside dc2's namespace, as a client there; returns its result."""
    out = {}

    def run():
        try:
            enter_netns(NETNS)
            out["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - handed back to the caller
            out["error"] = e
    t = threading.Thread(target=run)
    t.start()
    t.join(120)
    if "error" in out:
        raise out["error"]
    return out["value"]


def start_pair(server_factory, extra: list[str]):
    dc1 = server_factory(name="dc1", store_args=split_store("dc1", *extra), args=["--auth-fail-delay-ms", "0"])
    # dc2 listens on its veth address, which is not loopback: cleartext logins must be allowed
    # explicitly (the link exists only on this machine).
    dc2 = server_factory(name="dc2", store_args=split_store("dc2", *extra),
                         args=["--auth-fail-delay-ms", "0", "--allow-insecure-auth"],
                         host=NODE["dc2"], prefix=IN_DC2)
    return dc1, dc2


def converged(dc1, dc2, users, acked: Counter, committed: set, maybe: set):
    """Both DCs show the same mail, all of it acknowledged, none of it QUIT-deleted."""
    def check():
        a, b = all_tokens(dc1, users), all_tokens(dc2, users)
        missing = [k for k in acked if a[k] == 0 and k not in committed and k not in maybe]
        back = [k for k in committed if a[k] or b[k]]
        assert a == b, f"dc1 and dc2 differ: {len(set(a) ^ set(b))} messages"
        assert not missing and not back, f"{len(missing)} missing, {len(back)} deleted ones still listed"
        return ("converged", a)  # truthy even when every message was deleted
    return check


@pytest.mark.parametrize("margin", ["default", "shorter than the partition"])
def test_partition_between_datacenters(server_factory, tmp_path, split_cluster, margin):
    short = margin != "default"
    extra = ["--watermark-margin", "6"] if short else []
    dc1, dc2 = start_pair(server_factory, extra)
    users = make_users(dc1, 6, "split")
    probe_user = dc1.create_user(prefix="split-probe")
    late_user = dc1.create_user(prefix="split-late")
    eventually(lambda: all_tokens(dc2, users[-1:]) == Counter() and tokens_in(dc2, *probe_user) == Counter(),
               30, "accounts replicated to dc2")

    seconds = phase(40)
    loads = [Load(dc1, users, rate=15, seconds=seconds, tmp=tmp_path),
             Load(dc2, users, rate=15, seconds=seconds, tmp=tmp_path, prefix=IN_DC2)]
    readers = [Reader(dc1, users), Reader(dc2, users, netns=NETNS)]
    for r in readers:
        r.start()
    time.sleep(seconds * 0.2)
    split("partition")
    before = [Counter(r.sessions) for r in readers]
    cut = time.monotonic()
    # The cut is real: dc1's side cannot reach dc2, and mail delivered in dc1 now stays there.
    with pytest.raises(OSError):
        socket.create_connection((NODE["dc2"], dc2.pop3_port), timeout=3)
    probe = make_message()
    assert dc1.deliver(probe_user[0], probe) == {}
    time.sleep(2)
    assert in_dc2(lambda: tokens_in(dc2, *probe_user)) == Counter(), "dc2 saw dc1's mail across the cut"
    late = make_message()
    if short:
        # Mail for one user arrives in dc2; more than a margin later that user empties the
        # mailbox in dc1, whose watermark then passes the dc2 mail it has not seen yet.
        assert in_dc2(lambda: dc2.deliver(late_user[0], late)) == {}
        time.sleep(7)
        assert dc1.deliver(late_user[0], make_message()) == {}
        with dc1.session(*late_user) as p:
            assert len(p.list()) == 1, "dc1 saw dc2's mail across the cut"
            p.ok("DELE 1")
            p.quit()
    time.sleep(max(0.0, seconds * 0.55 - (time.monotonic() - cut)))
    during = [Counter(r.sessions) - b for r, b in zip(readers, before)]
    split("heal")
    partition_s = time.monotonic() - cut
    reports = [load.wait() for load in loads]
    for r in readers:
        r.stop.set()
        r.join(30)

    # Both sides kept serving their own clients while cut off from each other.
    for side, report, sessions in zip(("dc1", "dc2"), reports, during):
        print(f"{side}: load {report['delivered']} delivered, errors {report['errors']}; "
              f"reader during the partition {dict(sessions)}")
        assert report["errors"] == {}, f"{side} failed deliveries during the partition: {report['errors']}"
        assert sessions["committed"] > 0, f"{side}: no POP3 session completed during the partition: {sessions}"
        assert sessions["failed"] == 0, f"{side}: POP3 sessions failed during the partition: {sessions}"

    acked = loads[0].acked() + loads[1].acked()
    committed = readers[0].committed | readers[1].committed
    maybe = readers[0].maybe | readers[1].maybe
    if short:
        # Late rows sit below the watermarks the readers raised during the partition: run repair
        # (both sides' rows are in both DCs once hints have replayed) until the DCs converge.
        def repaired():
            r = subprocess.run([server_binary(), "repair", *split_store("dc1", *extra), "--reset",
                                "--rate", "100000", "--data-dir", str(tmp_path / "repair")],
                               capture_output=True, text=True, timeout=300, env=clean_env())
            assert r.returncode == 0, r.stdout + r.stderr
            return converged(dc1, dc2, users, acked, committed, maybe)()
        _, found = eventually(repaired, 240, "both DCs converged after repair", interval=5)
    else:
        _, found = eventually(converged(dc1, dc2, users, acked, committed, maybe), 240,
                           "both DCs converged after healing (hinted handoff)", interval=3)
    eventually(lambda: tokens_in(dc2, *probe_user) == Counter({token_of(probe): 1}), 60,
               "the probe crossed after healing")
    ledger_check(f"partition {partition_s:.0f} s, margin {margin}", acked, found, committed, maybe)
    # and no lightweight transaction on either side, partition or not
    counters = split("cas-counters")
    assert counters.count("cas_read=0 cas_write=0") == 2, counters
