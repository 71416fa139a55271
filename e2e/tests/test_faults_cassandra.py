"""Faults on the real two-DC Cassandra: a dc2 node dies, the local DC dies mid-session, a node
hangs, a node is killed during a delivery burst, the keyspace is missing.

These stop, kill and pause nodes of the cluster the other tests use, so they run on their own:
    POPFLEET_E2E_SERVER_ARGS="--store cassandra --cassandra 127.0.0.1:9042 --local-dc dc1 \\
        --keyspace popfleet_e2e" e2e/run-e2e --faults
(e2e/test-all does this as its last step). Every test leaves the cluster whole again.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections import Counter

import pytest

from conftest import (HOST, REPO, LmtpRaw, Pop3Raw, extra_server_args, free_port, make_message,
                      server_binary, token_of, unique_address)
from test_durability import collect_tokens, lmtp_worker

pytestmark = pytest.mark.faults

CASSANDRA = REPO / "e2e" / "cassandra"
NODE_IP = {"dc1": "127.0.0.1", "dc2": "127.0.0.2"}
NODE_OF = {"dc1": "n1", "dc2": "n2"}
# Short enough that a hung node turns into -ERR [SYS/TEMP] well before a client gives up.
TIMEOUT_MS = "2000"


def cassandra(*args: str, timeout: float = 600, topology: str = "loopback") -> str:
    """Runs e2e/cassandra (POPFLEET_CASSANDRA_TOPOLOGY=`topology`); fails the test with its
    output when it fails."""
    env = dict(os.environ, POPFLEET_CASSANDRA_TOPOLOGY=topology)
    r = subprocess.run([str(CASSANDRA), *args], capture_output=True, text=True, timeout=timeout, env=env)
    if r.returncode != 0:
        pytest.fail(f"e2e/cassandra {' '.join(args)} ({topology}) failed ({r.returncode}):\n{r.stdout}\n{r.stderr}",
                    pytrace=False)
    return r.stdout + r.stderr


def keyspace() -> str:
    args = extra_server_args()
    if "cassandra" not in args or "--keyspace" not in args:
        pytest.fail("fault tests need POPFLEET_E2E_SERVER_ARGS with --store cassandra ... --keyspace K",
                    pytrace=False)
    return args[args.index("--keyspace") + 1]


def store_args(dc: str, ks: str | None = None) -> list[str]:
    return ["--store", "cassandra", "--cassandra", f"{NODE_IP[dc]}:9042", "--local-dc", dc,
            "--keyspace", ks or keyspace(), "--cassandra-timeout-ms", TIMEOUT_MS]


@pytest.fixture(autouse=True)
def whole_cluster_again():
    """Before and after each test: every node running, resumed and seen Up by the others."""
    keyspace()
    cassandra("up")
    yield
    for node in ("n1", "n2"):
        subprocess.run([str(CASSANDRA), "resume", node], capture_output=True)
    cassandra("up")


def eventually(check, timeout: float, what: str, interval: float = 1.0):
    """Polls `check` (returns a truthy value or raises AssertionError/OSError) until `timeout`."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
            last = result
        except (AssertionError, OSError) as e:
            last = e
        time.sleep(interval)
    pytest.fail(f"{what}: not within {timeout:.0f}s (last: {last!r})", pytrace=False)


def tokens_in(srv, addr: str, pw: str, token=token_of) -> Counter:
    """token -> copies in the mailbox, from the headers (TOP n 0) of every message."""
    found = Counter()
    with srv.session(addr, pw) as p:
        for n in p.list():
            found[token(p.top(n, 0))] += 1
        p.quit()
    return found


def assert_deferred(lmtp: LmtpRaw, addr: str) -> None:
    """A delivery to `addr` on an open LMTP session is deferred (4xx), not accepted or bounced."""
    assert lmtp.cmd("MAIL FROM:<s@example.org>")[0] == 250
    code, _ = lmtp.cmd(f"RCPT TO:<{addr}>")
    if code == 250:
        assert lmtp.cmd("DATA")[0] == 354
        lmtp.send(lmtp.data_bytes(make_message()))
        code, _ = lmtp.read_reply()
    assert 400 <= code < 500, code


def test_dc2_node_down_dc1_keeps_serving_and_dc2_catches_up(server_factory):
    dc1 = server_factory(name="dc1", store_args=store_args("dc1"))
    addr, pw = dc1.create_user(prefix="dc2down")
    first = make_message()
    assert dc1.deliver(addr, first) == {}

    cassandra("stop", "n2", "--kill")

    # dc1 works alone at LOCAL_QUORUM: readiness, accounts, delivery, a full POP3 session.
    assert dc1.admin("GET", "/readyz")[0] == 200
    late_addr, late_pw = dc1.create_user(prefix="dc2down-new")
    msgs = [make_message() for _ in range(10)]
    for m in msgs:
        assert dc1.deliver(addr, m) == {}
    assert dc1.deliver(late_addr, msgs[0]) == {}
    with dc1.session(addr, pw) as p:
        assert p.stat()[0] == 11
        assert p.retr(1).endswith(first)
        for n in range(1, 6):
            p.ok(f"DELE {n}")
        assert p.quit().startswith(b"+OK")
    kept = tokens_in(dc1, addr, pw)
    assert len(kept) == 6 and all(v == 1 for v in kept.values())

    cassandra("up")  # n2 back: hinted handoff replays what it missed, deletions included

    dc2 = server_factory(name="dc2", store_args=store_args("dc2"))

    def dc2_converged():
        assert tokens_in(dc2, addr, pw) == kept  # nothing missing, nothing deleted comes back
        assert tokens_in(dc2, late_addr, late_pw) == Counter({token_of(msgs[0]): 1})
        return True

    eventually(dc2_converged, 120, "dc2 sees the mailbox as dc1 left it after n2 returned")


def test_local_dc_down_mid_session_then_recovers(server_factory):
    srv = server_factory(name="dc1", store_args=store_args("dc1"))
    addr, pw = srv.create_user(prefix="localdown")
    msgs = [make_message() for _ in range(3)]
    for m in msgs:
        assert srv.deliver(addr, m) == {}

    session = srv.session(addr, pw)
    assert session.stat()[0] == 3
    lmtp = LmtpRaw(srv.lmtp_port)
    assert lmtp.lhlo()[0] == 250

    cassandra("stop", "n1", "--kill")

    # The open session: reads fail as temporary, DELE is only a mark, QUIT commits nothing.
    assert session.cmd("RETR 2").startswith(b"-ERR [SYS/TEMP]")
    assert session.cmd("DELE 1").startswith(b"+OK")
    assert session.cmd("QUIT").startswith(b"-ERR [SYS/TEMP]")
    session.close()
    # A new login is a temporary failure, never a wrong "bad password".
    with srv.pop3() as p:
        p.cmd(f"USER {addr}")
        reply = p.cmd(f"PASS {pw}")
        assert reply.startswith(b"-ERR [SYS/TEMP]"), reply
    assert_deferred(lmtp, addr)
    lmtp.close()
    # Admin: alive, not ready, account changes refused as temporary.
    assert srv.admin("GET", "/healthz")[0] == 200
    assert srv.admin("GET", "/readyz")[0] == 503
    status, body = srv.admin("PUT", f"/users/{unique_address()}", {"password": "x" * 12})
    assert status == 503 and "unavailable" in body["error"], (status, body)
    assert srv.alive()

    cassandra("up")

    # The same process recovers on its own (the driver reconnects); nothing was deleted.
    eventually(lambda: srv.admin("GET", "/readyz")[0] == 200, 90, "readyz after n1 returned")
    eventually(lambda: tokens_in(srv, addr, pw) == Counter(token_of(m) for m in msgs), 60,
               "all three messages readable after n1 returned")
    srv.assert_serves()


def test_hung_local_node_answers_sys_temp(server_factory):
    srv = server_factory(name="dc1", store_args=store_args("dc1"))
    addr, pw = srv.create_user(prefix="hung")
    msg = make_message()
    assert srv.deliver(addr, msg) == {}

    cassandra("pause", "n1")
    try:
        # Requests time out after --cassandra-timeout-ms and become temporary errors; the client
        # (30 s socket timeout) gets an answer, and the server keeps accepting connections.
        with srv.pop3(timeout=30) as p:
            p.cmd(f"USER {addr}")
            assert p.cmd(f"PASS {pw}").startswith(b"-ERR [SYS/TEMP]")
        with LmtpRaw(srv.lmtp_port, timeout=30) as c:
            assert c.lhlo()[0] == 250
            assert_deferred(c, addr)
        assert srv.admin("GET", "/readyz")[0] == 503
    finally:
        cassandra("resume", "n1")

    eventually(lambda: tokens_in(srv, addr, pw) == Counter({token_of(msg): 1}), 90,
               "mailbox readable after n1 resumed")
    srv.assert_serves()


def test_local_node_killed_during_delivery_burst_loses_nothing_acknowledged(server_factory):
    srv = server_factory(name="dc1", store_args=store_args("dc1"))
    users = [srv.create_user(prefix="burst") for _ in range(4)]
    jobs = [(users[i % 4][0], make_message(subject=f"burst {i}")) for i in range(400)]
    acked, errors, lock, stop = [], [], threading.Lock(), threading.Event()
    threads = [threading.Thread(target=lmtp_worker,
                                args=(srv.lmtp_port, jobs[w::4], acked, errors, lock, stop))
               for w in range(4)]
    for t in threads:
        t.start()
    eventually(lambda: len(acked) >= 60, 120, "60 deliveries acknowledged", interval=0.01)

    cassandra("stop", "n1", "--kill")
    time.sleep(3)  # deliveries go on against a dead local DC: they must be deferred
    stop.set()
    for t in threads:
        t.join(60)
    assert srv.alive()
    assert errors, "no delivery failed although the local DC was down"
    with lock:
        acknowledged = list(acked)

    cassandra("up")
    eventually(lambda: srv.admin("GET", "/readyz")[0] == 200, 90, "readyz after n1 returned")

    found = Counter()
    for addr, pw in users:
        for token, n in eventually(lambda: tokens_in(srv, addr, pw), 60, f"mailbox {addr}").items():
            found[(addr, token)] += n
    missing = [a for a in acknowledged if found[a] == 0]
    sent = {(r, token_of(m)) for r, m in jobs}
    assert not missing, f"{len(missing)} acknowledged messages lost, e.g. {missing[:3]}"
    assert all(v == 1 for v in found.values()), "a message was stored twice"
    assert set(found) <= sent, "a message that was never sent appeared"


def serve_once(tmp_path, *args: str) -> subprocess.CompletedProcess:
    """Runs `pop3d serve` to its end (for configurations that must stop start-up)."""
    cmd = [server_binary(), "serve", "--data-dir", str(tmp_path / "data"),
           "--pop3", f"{HOST}:{free_port()}", "--lmtp", f"{HOST}:{free_port()}",
           "--admin", f"{HOST}:{free_port()}", *args]
    env = {k: v for k, v in os.environ.items() if not k.startswith("POP3D_")}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)


def test_missing_keyspace_or_unknown_dc_refuses_to_start(tmp_path):
    r = serve_once(tmp_path, *store_args("dc1", ks="popfleet_no_such_keyspace"))
    assert r.returncode != 0
    assert "keyspace popfleet_no_such_keyspace does not exist" in r.stderr, r.stderr[-2000:]
    assert "pop3d migrate" in r.stderr

    args = store_args("dc1")
    args[args.index("--local-dc") + 1] = "dc9"
    r = serve_once(tmp_path, *args)
    assert r.returncode != 0
    assert 'no Cassandra node in local datacenter "dc9"' in r.stderr, r.stderr[-2000:]
    assert "dc1" in r.stderr and "dc2" in r.stderr
