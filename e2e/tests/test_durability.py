"""Durability: what the server acknowledged survives kill -9; uncommitted deletions don't
happen; UIDLs survive restarts."""

import random
import threading
import time
from collections import Counter

import pytest

from conftest import LmtpRaw, make_message, token_of


def wrapped(text: str, width: int = 76) -> list[str]:
    """Lines short enough for RFC 5322 (pop3d refuses lines over 998 octets)."""
    return [text[k:k + width] for k in range(0, len(text), width)]


def lmtp_worker(port: int, jobs: list, acked: list, errors: list, lock: threading.Lock,
                stop: threading.Event):
    """Deliver (rcpt, message) jobs over one LMTP connection, reconnecting on errors;
    record the token of every message answered with 250."""
    c = None
    for rcpt, msg in jobs:
        if stop.is_set():
            break
        try:
            if c is None:
                c = LmtpRaw(port, timeout=30)
                assert c.lhlo()[0] == 250
            code, _ = c.cmd("MAIL FROM:<load@example.org>")
            if code != 250:
                raise RuntimeError(f"MAIL {code}")
            code, _ = c.cmd(f"RCPT TO:<{rcpt}>")
            if code != 250:
                raise RuntimeError(f"RCPT {code}")
            code, _ = c.cmd("DATA")
            if code != 354:
                raise RuntimeError(f"DATA {code}")
            c.send(c.data_bytes(msg))
            code, _ = c.read_reply()
            if code == 250:
                with lock:
                    acked.append((rcpt, token_of(msg)))
            else:
                with lock:
                    errors.append(f"final reply {code}")
        except Exception as e:  # the server may be killed underneath us
            with lock:
                errors.append(repr(e))
            if c is not None:
                c.close()
            c = None
            if stop.is_set():
                break
    if c is not None:
        c.close()


def collect_tokens(server, users) -> Counter:
    """token -> number of copies, over all users' mailboxes (via POP3 TOP n 0)."""
    found = Counter()
    for addr, pw in users:
        with server.session(addr, pw) as p:
            listing = p.list()
            for n in listing:
                found[(addr, token_of(p.top(n, 0)))] += 1
            p.quit()
    return found


def run_load(server, users, total: int, workers: int, kill_after: int | None):
    rng = random.Random(1234)
    jobs = [(users[i % len(users)][0],
             make_message(subject=f"durable {i}",
                          body_lines=[f"payload {i}", *wrapped("d" * rng.randint(10, 2000))]))
            for i in range(total)]
    per_worker = [jobs[i::workers] for i in range(workers)]
    acked, errors, lock, stop = [], [], threading.Lock(), threading.Event()
    threads = [threading.Thread(target=lmtp_worker,
                                args=(server.lmtp_port, w, acked, errors, lock, stop))
               for w in per_worker]
    for t in threads:
        t.start()
    if kill_after is not None:
        deadline = time.monotonic() + 120
        while len(acked) < kill_after and time.monotonic() < deadline:
            if not any(t.is_alive() for t in threads):
                break
            time.sleep(0.001)
        with lock:
            snapshot = list(acked)
        server.kill9()
        stop.set()
        for t in threads:
            t.join(60)
        # replies that raced with the kill are still acknowledgements
        return snapshot, list(acked), errors, jobs
    for t in threads:
        t.join(300)
    server.kill9()  # immediately after the last 250
    return list(acked), list(acked), errors, jobs


@pytest.mark.parametrize("mode", ["all-then-kill", "kill-mid-flight"])
def test_acknowledged_messages_survive_kill9(server_factory, mode):
    srv = server_factory(name="durable")
    users = [srv.create_user(prefix="dur") for _ in range(4)]
    total = 200
    kill_after = None if mode == "all-then-kill" else 120
    _, acked, errors, jobs = run_load(srv, users, total, workers=6, kill_after=kill_after)
    if mode == "all-then-kill":
        assert len(acked) == total, f"not all deliveries acknowledged: {errors[:5]}"
    else:
        assert len(acked) >= kill_after, errors[:5]

    srv.start()  # same data dir
    found = collect_tokens(srv, users)
    all_tokens = {(r, token_of(m)) for r, m in jobs}
    missing = [a for a in acked if found[a] == 0]
    dupes = {k: v for k, v in found.items() if v > 1}
    unknown = [k for k in found if k not in all_tokens]
    assert not missing, f"{len(missing)} acknowledged messages lost after kill -9, e.g. {missing[:3]}"
    assert not dupes, f"duplicated messages after restart: {list(dupes.items())[:3]}"
    assert not unknown, f"messages that were never sent: {unknown[:3]}"
    # every stored message is complete: sizes from LIST equal RETR octets, content intact
    by_token = {token_of(m): m for _, m in jobs}
    for addr, pw in users[:2]:
        with srv.session(addr, pw) as p:
            listing = p.list()
            for n, size in list(listing.items())[:25]:
                content = p.retr(n)
                assert len(content) == size
                assert content.endswith(by_token[token_of(content)])
            p.quit()
    # admin counts agree with POP3
    for addr, _ in users:
        assert srv.mailbox(addr)["messages"] == sum(v for (a, _), v in found.items() if a == addr)


def test_dele_without_quit_survives_kill9(server_factory):
    srv = server_factory(name="dele")
    addr, pw = srv.create_user()
    msgs = [make_message() for _ in range(4)]
    for m in msgs:
        assert srv.deliver(addr, m) == {}
    p = srv.session(addr, pw)
    uids = p.uidl()
    for n in (1, 2, 3):
        assert p.cmd(f"DELE {n}").startswith(b"+OK")
    srv.kill9()
    p.close()
    srv.start()
    with srv.session(addr, pw) as p:
        assert p.uidl() == uids, "DELE without QUIT must not delete (and UIDLs must persist)"
        p.quit()


def test_committed_quit_survives_kill9(server_factory):
    srv = server_factory(name="commit")
    addr, pw = srv.create_user()
    msgs = [make_message() for _ in range(3)]
    for m in msgs:
        assert srv.deliver(addr, m) == {}
    with srv.session(addr, pw) as p:
        uids = p.uidl()
        assert p.cmd("DELE 2").startswith(b"+OK")
        assert p.quit().startswith(b"+OK")
    srv.kill9()
    srv.start()
    with srv.session(addr, pw) as p:
        assert p.uidl() == {1: uids[1], 2: uids[3]}
        assert p.retr(2).endswith(msgs[2])
        p.quit()


def test_restart_keeps_users_mail_and_uidls(server_factory):
    srv = server_factory(name="restart")
    addr, pw = srv.create_user()
    msgs = [make_message() for _ in range(3)]
    for m in msgs:
        assert srv.deliver(addr, m) == {}
    with srv.session(addr, pw) as p:
        uids = p.uidl()
        sizes = p.list()
        p.quit()
    rc = srv.stop()
    assert rc == 0, f"pop3d exited with {rc} on SIGTERM"
    srv.start()
    with srv.session(addr, pw) as p:
        assert p.uidl() == uids
        assert p.list() == sizes
        for n, m in enumerate(msgs, 1):
            assert p.retr(n).endswith(m)
        p.quit()
    status, body = srv.admin("GET", "/users")
    assert status == 200 and addr in body["users"]


def test_user_created_then_killed_persists(server_factory):
    """A 2xx from the admin API means the account is durable."""
    srv = server_factory(name="userdur")
    addr, pw = srv.create_user()
    srv.kill9()
    srv.start()
    with srv.session(addr, pw) as p:
        p.quit()
