"""Regression tests for the LMTP findings of the outside probe (issue 14, section 5 of
test_security_probe.py's list): the disk reserve holds for a many-recipient transaction, mailbox
quotas, line-length limits, a transaction deadline, a minimum data rate, and an idle timer that
trickled bytes do not reset (POP3 too).
"""

from __future__ import annotations

import itertools
import re
import shutil
import socket
import threading
import time

import pytest

from conftest import ConnectionClosed, LmtpRaw, make_message, unique_address
from test_admin_cli import assert_json_error, cli
from test_faults_load import small_fs  # noqa: F401  (a small tmpfs for the disk test)

MIB = 1024 * 1024


def read_until_closed(sock: socket.socket, limit: float) -> tuple[float | None, bytes]:
    """Reads until EOF; (seconds waited or None after `limit`, bytes)."""
    t0 = time.monotonic()
    data = b""
    while True:
        left = limit - (time.monotonic() - t0)
        if left <= 0:
            return None, data
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            return None, data
        except ConnectionResetError:
            return time.monotonic() - t0, data
        if not chunk:
            return time.monotonic() - t0, data
        data += chunk


def trickle(sock: socket.socket, pieces, interval: float, limit: float) -> tuple[float | None, bytes]:
    """Sends one piece every `interval` seconds until the server closes the connection.
    Returns (seconds until the close, or None if still open after `limit`; bytes received)."""
    t0 = time.monotonic()
    got = b""
    for piece in pieces:
        if time.monotonic() - t0 > limit:
            return None, got
        try:
            sock.sendall(piece)
        except (BrokenPipeError, ConnectionResetError):
            return time.monotonic() - t0, got + read_until_closed(sock, 1)[1]
        deadline = time.monotonic() + interval
        while (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)
            try:
                chunk = sock.recv(4096)
            except socket.timeout:
                break
            except ConnectionResetError:
                return time.monotonic() - t0, got
            if not chunk:
                return time.monotonic() - t0, got
            got += chunk
    return None, got


def sized_message(octets: int, **kw) -> bytes:
    """A message of about `octets` octets (78-octet body lines)."""
    return make_message(body_lines=["q" * 76] * max(1, octets // 78), **kw)


def reply_codes(replies) -> list[int]:
    return [code for code, _ in replies]


def enhanced_of(replies) -> list[bytes]:
    return [text[0].split(b" ")[0] if text else b"" for _, text in replies]


# ==========================================================================================
# 5. LMTP: disk reserve, quotas, line length, deadlines


def test_many_recipients_cannot_write_past_the_disk_reserve(server_factory, small_fs):  # noqa: F811
    """One transaction to 60 recipients with a 512 KiB message is 30 MiB of copies on a 24 MiB
    file system: every copy either is delivered and readable or gets 452 4.3.1, and the free
    space never drops far below the reserve (--min-free-space-mb 4)."""
    srv = server_factory(name="amp", store_args=[], data_dir=small_fs / "data",
                         env={"POP3D_SCRAM_ITERATIONS": "4096"},
                         args=["--min-free-space-mb", "4", "--max-message-size", str(MIB)])
    users = [srv.create_user(prefix=f"amp{i}") for i in range(60)]
    msg = sized_message(512 * 1024)
    lowest = [shutil.disk_usage(small_fs).free]
    done = threading.Event()

    def watch():
        while not done.is_set():
            lowest[0] = min(lowest[0], shutil.disk_usage(small_fs).free)
            time.sleep(0.01)
    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        rcpt, data = srv.deliver_raw([u for u, _ in users], msg)
    except (socket.timeout, ConnectionClosed, ConnectionResetError) as e:
        pytest.fail(f"no answer to the transaction ({e!r}); free space fell to "
                    f"{lowest[0] / MIB:.1f} MiB", pytrace=False)
    finally:
        done.set()
        watcher.join()
    accepted = [u for (u, _), (code, _) in zip(users, rcpt) if code == 250]
    for (code, text) in rcpt:
        assert code == 250 or (code == 452 and text[0].startswith(b"4.3.1")), (code, text)
    for (code, text) in data:
        assert code == 250 or (code == 452 and text[0].startswith(b"4.3.1")), (code, text)
    delivered = [u for u, (code, _) in zip(accepted, data) if code == 250]
    assert len(delivered) < len(users), "30 MiB cannot fit: some copies must be refused"
    assert lowest[0] >= 2 * MIB, f"free space fell to {lowest[0] / MIB:.1f} MiB"
    assert srv.alive()
    for addr, pw in users:
        expected = 1 if addr in delivered else 0
        with srv.session(addr, pw) as p:
            assert p.stat()[0] == expected, addr
            if expected:
                assert p.retr(1).endswith(msg)
            p.quit()


def test_mailbox_quota(server_factory):
    srv = server_factory(args=["--mailbox-quota-mb", "1"], name="quota")
    addr, pw = srv.create_user()
    other, _ = srv.create_user()
    assert srv.mailbox(addr)["quota_octets"] == MIB
    part = 300_000
    for _ in range(3):
        assert srv.deliver(addr, sized_message(part)) == {}
    # room at RCPT, not for this message: 552 5.2.2 at the end of DATA, others still delivered
    rcpt, data = srv.deliver_raw([addr, other], sized_message(part))
    assert reply_codes(rcpt) == [250, 250], rcpt
    assert reply_codes(data) == [552, 250], data
    assert data[0][1][0].startswith(b"5.2.2"), data
    assert srv.mailbox(addr)["messages"] == 3
    small = sized_message(20_000)
    assert srv.deliver(addr, small) == {}, "a message that fits is taken"
    # a per-account override, then back to the default
    status, body = srv.admin("PUT", f"/users/{addr}/quota", {"quota_mb": 2})
    assert status == 200, (status, body)
    assert srv.mailbox(addr)["quota_octets"] == 2 * MIB
    assert srv.deliver(addr, sized_message(part)) == {}
    status, body = srv.admin("PUT", f"/users/{addr}/quota", {"quota_mb": None})
    assert status == 200, (status, body)
    box = srv.mailbox(addr)
    assert box["quota_octets"] == MIB and box["octets"] > MIB, box
    # over quota already: refused at RCPT
    with LmtpRaw(srv.lmtp_port) as c:
        assert c.lhlo()[0] == 250
        assert c.cmd("MAIL FROM:<s@example.org>")[0] == 250
        code, text = c.cmd(f"RCPT TO:<{addr}>")
        assert code == 552 and text[0].startswith(b"5.2.2"), (code, text)
        assert addr.encode() in text[0], text
        c.cmd("QUIT")
    # reading and deleting frees the room
    with srv.session(addr, pw) as p:
        for n in p.list():
            p.ok(f"DELE {n}")
        assert p.quit().startswith(b"+OK")
    assert srv.deliver(addr, sized_message(part)) == {}
    # the override through PUT /users: kept when a later PUT does not name it
    assert srv.admin("PUT", f"/users/{addr}", {"password": pw, "quota_mb": 3})[0] == 200
    assert srv.mailbox(addr)["quota_octets"] == 3 * MIB
    assert srv.admin("PUT", f"/users/{addr}", {"password": pw})[0] == 200
    assert srv.mailbox(addr)["quota_octets"] == 3 * MIB
    status, body = srv.admin("PUT", f"/users/{unique_address('none')}/quota", {"quota_mb": 1})
    assert_json_error(status, body, 404)


def test_quota_without_default_and_from_the_cli(server):
    addr, _ = server.create_user()
    assert server.mailbox(addr)["quota_octets"] is None
    r = cli("quota", addr, "5", url=server.admin_url)
    assert r.returncode == 0, r.stderr.decode()
    assert server.mailbox(addr)["quota_octets"] == 5 * MIB
    r = cli("quota", addr, "none", url=server.admin_url)
    assert r.returncode == 0, r.stderr.decode()
    assert server.mailbox(addr)["quota_octets"] is None


def test_a_5_mb_header_line_is_refused(server):
    a, _ = server.create_user()
    b, _ = server.create_user()
    msg = make_message(extra_headers=["X-Long: " + "h" * (5 * MIB)])
    rcpt, data = server.deliver_raw([a, b], msg)
    assert reply_codes(rcpt) == [250, 250]
    assert reply_codes(data) == [554, 554], data
    assert enhanced_of(data) == [b"5.6.0", b"5.6.0"], data
    assert server.mailbox(a)["messages"] == 0 and server.mailbox(b)["messages"] == 0
    server.assert_serves()


@pytest.mark.parametrize("limit,accepted", [(998, False), (2000, True)])
def test_body_line_length_limit(server_factory, limit, accepted):
    srv = server_factory(args=["--max-line-length", str(limit)], name=f"line{limit}")
    addr, pw = srv.create_user()
    exact = make_message(body_lines=["e" * 998])
    assert srv.deliver(addr, exact) == {}, "998 octets are always fine"
    long_line = make_message(body_lines=["short", "l" * 1000, "short"])
    rcpt, data = srv.deliver_raw([addr], long_line)
    if accepted:
        assert reply_codes(data) == [250], data
        msgs = srv.retrieve_all(addr, pw)
        assert msgs[-1].endswith(long_line)
    else:
        assert reply_codes(data) == [554], data
        assert enhanced_of(data) == [b"5.6.0"], data
        assert srv.mailbox(addr)["messages"] == 1


def test_lmtp_trickled_command_is_cut_by_the_idle_timer(server_factory):
    srv = server_factory(args=["--idle-timeout", "3"], name="slowlmtp")
    with LmtpRaw(srv.lmtp_port) as c:
        assert c.lhlo()[0] == 250
        closed, got = trickle(c.sock, (bytes([b]) for b in itertools.cycle(b"MAIL FROM:<slow@x>")),
                              interval=1.0, limit=20)
    assert closed is not None, f"one byte a second kept the LMTP session open for 20 s: {got!r}"
    assert closed < 9, f"cut after {closed:.1f} s with a 3 s idle timeout"
    assert b"421 4.4.2" in got, got


def test_lmtp_transaction_deadline(server_factory):
    """A complete line every second is never idle; the transaction still has 5 s in all."""
    srv = server_factory(args=["--idle-timeout", "60", "--lmtp-transaction-timeout", "5",
                               "--min-data-rate", "1"], name="deadline")
    addr, _ = srv.create_user()
    with LmtpRaw(srv.lmtp_port) as c:
        assert c.lhlo()[0] == 250
        t0 = time.monotonic()
        assert c.cmd("MAIL FROM:<s@example.org>")[0] == 250
        assert c.cmd(f"RCPT TO:<{addr}>")[0] == 250
        assert c.cmd("DATA")[0] == 354
        closed, got = trickle(c.sock, itertools.cycle([b"Subject: slow\r\n"]), interval=1.0,
                              limit=25)
        elapsed = time.monotonic() - t0
    assert closed is not None, f"the transaction ran 25 s under a 5 s deadline: {got!r}"
    assert elapsed < 12, f"cut after {elapsed:.1f} s with a 5 s transaction deadline"
    assert re.search(rb"421 4\.4\.2 .*[Tt]ransaction timeout", got), got
    assert srv.mailbox(addr)["messages"] == 0


def test_lmtp_minimum_data_rate(server_factory):
    """40 octets a second against a 1000 octet/s minimum: cut once the 30 s grace is over."""
    srv = server_factory(args=["--idle-timeout", "120", "--lmtp-transaction-timeout", "600",
                               "--min-data-rate", "1000"], name="rate")
    addr, _ = srv.create_user()
    with LmtpRaw(srv.lmtp_port) as c:
        assert c.lhlo()[0] == 250
        assert c.cmd("MAIL FROM:<s@example.org>")[0] == 250
        assert c.cmd(f"RCPT TO:<{addr}>")[0] == 250
        assert c.cmd("DATA")[0] == 354
        closed, got = trickle(c.sock, itertools.cycle([b"X-Slow: 0123456789\r\n"]), interval=0.5,
                              limit=60)
    assert closed is not None, f"DATA at 40 octets/s ran for 60 s: {got!r}"
    assert closed < 50, f"cut after {closed:.1f} s (30 s grace)"
    assert re.search(rb"421 4\.4\.2 .*[Dd]ata too slow", got), got
    assert srv.mailbox(addr)["messages"] == 0


def test_pop3_trickled_command_is_cut_by_the_idle_timer(server_factory):
    srv = server_factory(args=["--idle-timeout", "3"], name="slowpop")
    addr, pw = srv.create_user()
    with srv.session(addr, pw) as p:
        closed, got = trickle(p.sock, (bytes([b]) for b in itertools.cycle(b"NOOP")),
                              interval=1.0, limit=20)
    assert closed is not None, f"one byte a second kept the POP3 session open for 20 s: {got!r}"
    assert closed < 9, f"cut after {closed:.1f} s with a 3 s idle timeout"
    assert got.startswith(b"-ERR"), got
