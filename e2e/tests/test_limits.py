"""Limits and abuse: long lines, bad commands, idle timeout, connection caps, failed-login
delay, identical failure replies, message size. After each, the server must still serve a
normal session."""

import socket
import time

import pytest

from conftest import (ConnectionClosed, LmtpRaw, Pop3Raw, make_message, plain_b64,
                      unique_address)


# ------------------------------------------------------------------------------------------
# command length


def test_300_octet_command_err_and_session_continues(server, user):
    addr, pw = user
    assert server.deliver(addr, make_message()) == {}
    with server.pop3() as p:
        line = b"USER " + b"a" * 293  # 298 + CRLF = 300 octets
        assert len(line) + 2 == 300
        reply = p.cmd(line)
        assert reply.startswith(b"-ERR"), reply
        # exactly one reply: the next command's reply follows right away
        first, _ = p.multi("CAPA")
        assert first.startswith(b"+OK"), first
        p.login(addr, pw)
        reply = p.cmd(b"NOOP " + b"x" * 300)
        assert reply.startswith(b"-ERR"), reply
        assert p.stat()[0] == 1
        reply = p.cmd(b"RETR 1" + b" " * 300)
        assert reply.startswith(b"-ERR"), reply
        assert p.stat()[0] == 1
        assert p.quit().startswith(b"+OK")
    server.assert_serves()


def test_10k_line_single_err(server, user):
    addr, pw = user
    with server.pop3() as p:
        reply = p.cmd(b"NOOP " + b"y" * 10000)
        assert reply.startswith(b"-ERR"), reply
        p.login(addr, pw)  # the next reply belongs to USER: no stray -ERRs queued
        assert p.stat() == (0, 0)
        p.quit()
    server.assert_serves()


def test_long_but_legal_password_line(server):
    """PASS with a 240-char password is a 247-octet line: within the 255-octet limit."""
    pw = "p" * 240
    addr, _ = server.create_user(password=pw)
    with server.pop3() as p:
        p.ok(f"USER {addr}")
        reply = p.cmd(f"PASS {pw}")
        assert reply.startswith(b"+OK"), reply
        p.quit()


def test_unterminated_flood_does_not_crash(server):
    """1 MB without a line end: the server answers -ERR or closes, and keeps serving."""
    s = socket.create_connection(("127.0.0.1", server.pop3_port), timeout=20)
    try:
        s.recv(512)
        try:
            s.sendall(b"A" * (1 << 20))
            s.settimeout(5)
            data = s.recv(4096)
            assert data == b"" or data.startswith(b"-ERR"), data[:200]
        except (ConnectionResetError, BrokenPipeError):
            pass
    finally:
        s.close()
    server.assert_serves()


def test_binary_garbage_command(server, user):
    addr, pw = user
    with server.pop3() as p:
        reply = p.cmd(b"\x00\xff\xfe\x80garbage")
        assert reply.startswith(b"-ERR"), reply
        p.login(addr, pw)
        p.quit()
    server.assert_serves()


# ------------------------------------------------------------------------------------------
# bad commands


@pytest.fixture
def strict_server(server_factory):
    return server_factory(args=["--max-bad-commands", "3", "--auth-fail-delay-ms", "10"],
                          name="strict")


def expect_closed(p: Pop3Raw):
    assert p.is_closed_by_peer(5), "server did not close the connection"


@pytest.mark.parametrize("logged_in", [False, True], ids=["authorization", "transaction"])
def test_too_many_bad_commands_closes(strict_server, logged_in):
    addr, pw = strict_server.create_user()
    # exactly max_bad_commands bad commands: still alive
    with strict_server.pop3() as p:
        if logged_in:
            p.login(addr, pw)
        for i in range(3):
            reply = p.cmd(f"XYZZY{i}")
            assert reply.startswith(b"-ERR"), reply
        first, _ = p.multi("CAPA")
        assert first.startswith(b"+OK"), "closed too early"
        p.quit()
    # one more: -ERR and close
    with strict_server.pop3() as p:
        if logged_in:
            p.login(addr, pw)
        for i in range(3):
            assert p.cmd(f"XYZZY{i}").startswith(b"-ERR")
        reply = p.cmd("XYZZY-last")
        assert reply.startswith(b"-ERR"), reply
        expect_closed(p)
    strict_server.assert_serves()


def test_bad_commands_closed_session_deletes_nothing(strict_server):
    addr, pw = strict_server.create_user()
    assert strict_server.deliver(addr, make_message()) == {}
    with strict_server.session(addr, pw) as p:
        assert p.cmd("DELE 1").startswith(b"+OK")
        for i in range(4):
            p.cmd(f"BOGUS{i}")
        expect_closed(p)
    assert strict_server.mailbox(addr)["messages"] == 1


def test_default_bad_command_limit_is_20(server):
    with server.pop3() as p:
        for i in range(20):
            assert p.cmd(f"NOPE{i}").startswith(b"-ERR")
        first, _ = p.multi("CAPA")
        assert first.startswith(b"+OK")
    with server.pop3() as p:
        for i in range(21):
            assert p.cmd(f"NOPE{i}").startswith(b"-ERR")
        expect_closed(p)


# ------------------------------------------------------------------------------------------
# idle timeout


@pytest.fixture
def idle_server(server_factory):
    return server_factory(args=["--idle-timeout", "2"], name="idle")


def wait_for_close(p: Pop3Raw, limit: float) -> tuple[float, bytes]:
    """Read until EOF; returns (seconds waited, bytes received)."""
    t0 = time.monotonic()
    p.settimeout(limit)
    data = b""
    try:
        while True:
            chunk = p.sock.recv(4096)
            if not chunk:
                break
            data += chunk
    except ConnectionResetError:
        pass
    except socket.timeout:
        pytest.fail(f"no close within {limit}s (got {data!r})")
    return time.monotonic() - t0, data


def test_idle_timeout_closes_and_deletes_nothing(idle_server):
    addr, pw = idle_server.create_user()
    for _ in range(2):
        assert idle_server.deliver(addr, make_message()) == {}
    p = idle_server.session(addr, pw)
    assert p.cmd("DELE 1").startswith(b"+OK")
    waited, data = wait_for_close(p, 15)
    p.close()
    assert waited >= 1.5, f"closed after {waited:.2f}s with a 2s idle timeout"
    assert data.startswith(b"-ERR"), data
    assert data.endswith(b"\r\n") and data.count(b"\r\n") == 1, data
    assert idle_server.mailbox(addr)["messages"] == 2
    idle_server.assert_serves()


def test_idle_timeout_before_login(idle_server):
    p = idle_server.pop3()
    waited, data = wait_for_close(p, 15)
    p.close()
    assert waited >= 1.5
    assert data.startswith(b"-ERR"), data


def test_activity_keeps_session_alive(idle_server):
    addr, pw = idle_server.create_user()
    with idle_server.session(addr, pw) as p:
        for _ in range(5):
            time.sleep(1.0)
            assert p.cmd("NOOP").startswith(b"+OK")
        p.quit()


def test_idle_timeout_lmtp(idle_server):
    """LMTP sessions are subject to the idle timeout as well (the server closes)."""
    with LmtpRaw(idle_server.lmtp_port) as c:
        c.lhlo()
        c.settimeout(15)
        t0 = time.monotonic()
        try:
            while c.sock.recv(4096):
                pass
        except ConnectionResetError:
            pass
        except socket.timeout:
            pytest.fail("LMTP session not closed after the idle timeout")
        assert time.monotonic() - t0 >= 1.5


# ------------------------------------------------------------------------------------------
# connection caps


def connect_ok(port: int, source: str | None = None) -> Pop3Raw:
    p = Pop3Raw(port, source=source)
    assert p.greeting.startswith(b"+OK"), p.greeting
    return p


def expect_refused_pop3(port: int, source: str | None = None):
    p = Pop3Raw(port, source=source, read_greeting=False)
    try:
        greeting = p.readline()
        assert greeting.startswith(b"-ERR [SYS/TEMP]"), greeting
        assert p.is_closed_by_peer(5), "over-limit connection not closed"
    finally:
        p.close()


def wait_accepted(port: int, source: str | None = None, limit: float = 5.0) -> Pop3Raw:
    """The server notices closed connections asynchronously: retry a little."""
    deadline = time.monotonic() + limit
    while True:
        p = Pop3Raw(port, source=source, read_greeting=False)
        try:
            g = p.readline()
        except ConnectionClosed:
            g = b""
        if g.startswith(b"+OK"):
            p.greeting = g
            return p
        p.close()
        if time.monotonic() > deadline:
            pytest.fail(f"connection still refused after {limit}s: {g!r}")
        time.sleep(0.1)


def test_per_ip_connection_cap(server_factory):
    srv = server_factory(args=["--max-connections-per-ip", "3"], name="perip")
    addr, pw = srv.create_user()
    assert srv.deliver(addr, make_message()) == {}
    conns = [connect_ok(srv.pop3_port) for _ in range(3)]
    try:
        expect_refused_pop3(srv.pop3_port)
        expect_refused_pop3(srv.pop3_port)
        # the open ones still work
        conns[0].login(addr, pw)
        assert conns[0].stat()[0] == 1
        conns[1].login(addr, pw)
        assert conns[1].retr(1)
        # another source IP is not affected by 127.0.0.1's count
        other = connect_ok(srv.pop3_port, source="127.0.0.2")
        other.login(addr, pw)
        other.quit()
        # closing one frees a slot
        assert conns[0].quit().startswith(b"+OK")
        conns[0] = wait_accepted(srv.pop3_port)
        expect_refused_pop3(srv.pop3_port)
    finally:
        for c in conns:
            c.close()
    srv.assert_serves()


def test_per_ip_cap_lmtp(server_factory):
    srv = server_factory(args=["--max-connections-per-ip", "3"], name="periplmtp")
    conns = [LmtpRaw(srv.lmtp_port) for _ in range(3)]
    try:
        for c in conns:
            assert c.greeting[0] == 220
        with LmtpRaw(srv.lmtp_port, read_greeting=False) as c:
            code, text = c.read_reply()
            assert code == 421, (code, text)
            assert text[0].startswith(b"4.3.2"), text
            assert c.is_closed_by_peer(5)
        assert conns[0].lhlo()[0] == 250
    finally:
        for c in conns:
            c.close()
    time.sleep(0.3)
    srv.assert_serves()


def test_total_connection_cap(server_factory):
    srv = server_factory(args=["--max-connections", "2"], name="total")
    a = connect_ok(srv.pop3_port)
    b = connect_ok(srv.pop3_port, source="127.0.0.2")
    try:
        expect_refused_pop3(srv.pop3_port, source="127.0.0.3")
        expect_refused_pop3(srv.pop3_port)
        addr, pw = srv.create_user()
        b.login(addr, pw)
        assert b.stat() == (0, 0)
    finally:
        a.close()
        b.close()
    wait_accepted(srv.pop3_port).close()
    time.sleep(0.3)
    srv.assert_serves()


def test_total_connection_cap_lmtp(server_factory):
    srv = server_factory(args=["--max-connections", "2"], name="totallmtp")
    a = LmtpRaw(srv.lmtp_port)
    b = LmtpRaw(srv.lmtp_port, source="127.0.0.2")
    try:
        with LmtpRaw(srv.lmtp_port, source="127.0.0.3", read_greeting=False) as c:
            code, text = c.read_reply()
            assert code == 421 and text[0].startswith(b"4.3.2"), (code, text)
            assert c.is_closed_by_peer(5)
        assert a.lhlo()[0] == 250
    finally:
        a.close()
        b.close()
    time.sleep(0.3)
    srv.assert_serves()


# ------------------------------------------------------------------------------------------
# failed logins


@pytest.fixture
def delay_server(server_factory):
    return server_factory(args=["--auth-fail-delay-ms", "200"], name="delay")


def timed_failure(srv, addr: str, password: str, source: str | None = None) -> float:
    """Seconds from sending PASS until the server is ready for the next command (the delay
    may be applied before the -ERR or before reading the next command: measure both)."""
    with srv.pop3(source=source) as p:
        p.ok(f"USER {addr}")
        t0 = time.monotonic()
        reply = p.cmd(f"PASS {password}")
        assert reply.startswith(b"-ERR [AUTH]"), reply
        try:
            first, _ = p.multi("CAPA")
        except (ConnectionClosed, ConnectionResetError):
            first = b""
        elapsed = time.monotonic() - t0
        if first:
            assert first.startswith(b"+OK")
        return elapsed


def test_failed_login_delay_grows(delay_server):
    srv = delay_server
    addr, pw = srv.create_user()
    d1 = timed_failure(srv, addr, "wrong-1")
    d2 = timed_failure(srv, addr, "wrong-2")
    d3 = timed_failure(srv, addr, "wrong-3")
    assert d1 >= 0.18, f"first failure took {d1:.3f}s, expected >= 0.2s"
    assert d2 >= 0.38, f"second consecutive failure took {d2:.3f}s, expected >= 0.4s"
    assert d3 >= 0.78, f"third consecutive failure took {d3:.3f}s, expected >= 0.8s"
    # another source address has its own counter: its first failure is not ~1.6 s
    other = timed_failure(srv, addr, "wrong-x", source="127.0.0.2")
    assert other < 1.3, f"failure from another IP took {other:.3f}s (delay not per IP?)"
    # a correct login still works (possibly after a delay) and resets 'consecutive'
    with srv.session(addr, pw) as p:
        p.quit()
    after = timed_failure(srv, addr, "wrong-again")
    assert 0.18 <= after < 1.3, f"failure after a success took {after:.3f}s"
    srv.assert_serves()


def test_failed_login_delay_capped_at_15s(server_factory):
    """With an 8 s base the second consecutive failure would take 16 s uncapped: the cap
    makes it 15 s."""
    srv = server_factory(args=["--auth-fail-delay-ms", "8000"], name="cap")
    addr, _ = srv.create_user()
    d1 = timed_failure(srv, addr, "wrong-1")
    d2 = timed_failure(srv, addr, "wrong-2")
    assert 7.9 <= d1 < 9.5, d1
    assert 14.9 <= d2 < 15.9, f"second failure took {d2:.2f}s, expected the 15 s cap"


def test_failed_auth_plain_delayed(delay_server):
    srv = delay_server
    addr, pw = srv.create_user()
    with srv.pop3(source="127.0.0.5") as p:
        t0 = time.monotonic()
        reply = p.cmd(f"AUTH PLAIN {plain_b64(addr, 'nope')}")
        assert reply.startswith(b"-ERR [AUTH]"), reply
        p.multi("CAPA")
        assert time.monotonic() - t0 >= 0.18


def test_unknown_user_and_wrong_password_identical(delay_server):
    srv = delay_server
    addr, pw = srv.create_user()
    ghost = unique_address("ghost")

    def attempt(user, password):
        with srv.pop3(source="127.0.0.9") as p:
            r_user = p.cmd(f"USER {user}")
            r_pass = p.cmd(f"PASS {password}")
            return r_user, r_pass

    def attempt_plain(user, password):
        with srv.pop3(source="127.0.0.9") as p:
            return p.cmd(f"AUTH PLAIN {plain_b64(user, password)}")

    u1, p1 = attempt(addr, "wrong-password")
    u2, p2 = attempt(ghost, "wrong-password")
    assert u1 == u2, f"USER replies differ: {u1!r} vs {u2!r}"
    assert p1 == p2, f"PASS replies differ: {p1!r} vs {p2!r}"
    assert p1.startswith(b"-ERR [AUTH]"), p1
    a1 = attempt_plain(addr, "wrong-password")
    a2 = attempt_plain(ghost, "wrong-password")
    assert a1 == a2, f"AUTH PLAIN replies differ: {a1!r} vs {a2!r}"
    assert a1.startswith(b"-ERR [AUTH]")
    # also a known user with an empty-looking password and an address in another case
    with srv.session(addr, pw) as p:
        p.quit()
    srv.assert_serves()


# ------------------------------------------------------------------------------------------
# message size


def test_max_message_size_enforced(server_factory):
    srv = server_factory(args=["--max-message-size", "5000"], name="size")
    addr, pw = srv.create_user()
    small = make_message()
    big = make_message(body_lines=["q" * 76] * 100)  # ~7.9 KB
    assert srv.deliver(addr, small) == {}
    rcpt, data = srv.deliver_raw([addr], big)
    assert [c for c, _ in rcpt] == [250]
    assert [c for c, _ in data] == [552], data
    with LmtpRaw(srv.lmtp_port) as c:
        c.lhlo()
        code, text = c.cmd("MAIL FROM:<s@example.org> SIZE=6000")
        assert code == 552, (code, text)
    box = srv.mailbox(addr)
    assert box["messages"] == 1
    srv.assert_serves()


def test_lmtp_long_command_line(server):
    with LmtpRaw(server.lmtp_port) as c:
        c.lhlo()
        code, _ = c.cmd("MAIL FROM:<" + "a" * 5000 + "@example.org>")
        assert 500 <= code < 600 or code == 421, code
    server.assert_serves()
