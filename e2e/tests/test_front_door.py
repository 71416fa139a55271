"""The front door under abuse: PROXY protocol (trusted networks only, required where
configured, TLS TLV), CAPA for a remote cleartext client, a flood of idle connections,
slowloris, brute force, the command rate, and a client that stops reading. Each gets the
documented answer and the server keeps serving others."""

import socket
import threading
import time

import pytest

from conftest import Pop3Raw, free_port, make_message, plain_b64
from security_helpers import (TestPKI, closed_without_reply, connect, proxy_v1, proxy_v2,
                              recv_line, recv_until)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return TestPKI(tmp_path_factory.mktemp("front-pki"))


def caps_of(sock) -> list[bytes]:
    sock.sendall(b"CAPA\r\n")
    text = recv_until(sock, b"\r\n.\r\n")
    return text.split(b"\r\n")[1:-2]


# ------------------------------------------------------------------------------------------
# PROXY protocol


@pytest.fixture
def proxied(server_factory, pki):
    """POP3 and POP3S behind a proxy on 127.0.0.0/8; LMTP direct."""
    pop3s_port = free_port()
    srv = server_factory(args=[*pki.server_args(), "--pop3s", f"127.0.0.1:{pop3s_port}",
                               "--proxy-protocol", "pop3,pop3s",
                               "--proxy-trusted-networks", "127.0.0.0/8",
                               "--auth-fail-delay-ms", "20"], name="proxied")
    srv.pop3s_port = pop3s_port
    return srv


def test_proxy_header_from_an_untrusted_address_is_refused(server_factory):
    srv = server_factory(args=["--proxy-protocol", "pop3", "--proxy-trusted-networks",
                               "192.0.2.0/24"], name="untrusted")
    with connect(srv.pop3_port) as s:
        s.sendall(proxy_v1("203.0.113.9", "192.0.2.1", 5555, 110))
        assert closed_without_reply(s), "no greeting for an untrusted proxy"
    with connect(srv.pop3_port) as s:
        assert closed_without_reply(s), "and none without a header either"
    assert srv.log_has("not a trusted proxy")
    # LMTP is not behind the proxy here and still serves
    addr, pw = srv.create_user()
    assert srv.deliver(addr, make_message()) == {}


@pytest.mark.parametrize("version", [1, 2])
def test_trusted_proxy_remote_cleartext_client_sees_stls_not_user(proxied, pki, version):
    addr, pw = proxied.create_user()
    header = (proxy_v1 if version == 1 else proxy_v2)("203.0.113.9", "192.0.2.1", 5555, 110)
    with connect(proxied.pop3_port) as s:
        s.sendall(header)
        assert recv_line(s).startswith(b"+OK")
        caps = caps_of(s)
        assert b"STLS" in caps and b"USER" not in caps, caps
        assert b"SASL SCRAM-SHA-256" in caps, "SCRAM sends no secret: offered in cleartext"
        s.sendall(f"USER {addr}\r\n".encode())
        assert recv_line(s).startswith(b"-ERR [AUTH] Plaintext authentication disallowed")
        s.sendall(f"AUTH PLAIN {plain_b64(addr, pw)}\r\n".encode())
        assert recv_line(s).startswith(b"-ERR [AUTH] Plaintext authentication disallowed")
        s.sendall(b"STLS\r\n")
        assert recv_line(s).startswith(b"+OK")
        with pki.client_context().wrap_socket(s, server_hostname="localhost") as tls:
            caps = caps_of(tls)
            assert b"USER" in caps and b"STLS" not in caps, caps
            tls.sendall(f"USER {addr}\r\nPASS {pw}\r\n".encode())
            assert recv_line(tls) == b"+OK\r\n"
            assert recv_line(tls).startswith(b"+OK Logged in")
            tls.sendall(b"QUIT\r\n")
            recv_line(tls)
    assert proxied.log_has("peer=203.0.113.9:5555"), "the real client address is used"


def test_proxy_v2_ssl_tlv_marks_the_session_secure(proxied):
    addr, pw = proxied.create_user()
    with connect(proxied.pop3_port) as s:
        s.sendall(proxy_v2("198.51.100.7", "192.0.2.1", 40000, 110, tls_version="TLSv1.3"))
        assert recv_line(s).startswith(b"+OK")
        caps = caps_of(s)
        assert b"USER" in caps and b"STLS" not in caps, caps
        s.sendall(f"USER {addr}\r\nPASS {pw}\r\n".encode())
        recv_line(s)
        assert recv_line(s).startswith(b"+OK Logged in")


def test_proxy_v2_local_uses_the_socket_address(proxied):
    with connect(proxied.pop3_port) as s:
        s.sendall(proxy_v2("0.0.0.0", "0.0.0.0", 0, 0, local=True))
        assert recv_line(s).startswith(b"+OK")
        assert b"USER" in caps_of(s), "a health check from loopback is a loopback client"


def test_garbage_instead_of_a_header_is_refused(proxied):
    with connect(proxied.pop3_port) as s:
        s.sendall(b"CAPA\r\nUSER x\r\n")
        assert closed_without_reply(s)
    assert proxied.log_has("invalid PROXY header")


def test_proxy_header_then_implicit_tls(proxied, pki):
    addr, pw = proxied.create_user()
    with connect(proxied.pop3s_port) as s:
        # the header and the ClientHello may share a packet: the server must not over-read
        s.sendall(proxy_v2("203.0.113.20", "192.0.2.1", 1234, 995))
        with pki.client_context().wrap_socket(s, server_hostname="localhost") as tls:
            assert recv_line(tls).startswith(b"+OK")
            tls.sendall(f"USER {addr}\r\nPASS {pw}\r\n".encode())
            recv_line(tls)
            assert recv_line(tls).startswith(b"+OK Logged in")
    assert proxied.log_has("peer=203.0.113.20:1234")


def test_per_ip_cap_applies_to_the_proxied_address(server_factory):
    srv = server_factory(args=["--proxy-protocol", "pop3", "--proxy-trusted-networks", "127.0.0.1/32",
                               "--max-connections-per-ip", "2"], name="proxycap")
    held = []
    try:
        for _ in range(2):
            s = connect(srv.pop3_port)
            s.sendall(proxy_v1("203.0.113.9", "192.0.2.1", 5555, 110))
            assert recv_line(s).startswith(b"+OK")
            held.append(s)
        with connect(srv.pop3_port) as s:
            s.sendall(proxy_v1("203.0.113.9", "192.0.2.1", 5556, 110))
            assert recv_line(s).startswith(b"-ERR [SYS/TEMP] Too many connections")
        with connect(srv.pop3_port) as s:
            s.sendall(proxy_v1("203.0.113.10", "192.0.2.1", 5557, 110))
            assert recv_line(s).startswith(b"+OK"), "another client behind the same proxy is fine"
    finally:
        for s in held:
            s.close()


def test_swaks_lmtp_with_proxy_v2(server_factory):
    srv = server_factory(args=["--proxy-protocol", "lmtp", "--proxy-trusted-networks", "127.0.0.0/8"],
                         name="lmtpproxy")
    addr, _ = srv.create_user()
    from test_clients import need, run
    r = run([need("swaks"), "--protocol", "LMTP", "--server", f"127.0.0.1:{srv.lmtp_port}",
             "--to", addr, "--from", "a@example.org", "--proxy-version", "2", "--proxy-family", "AF_INET", "--proxy-protocol", "STREAM",
             "--proxy-source", "203.0.113.9", "--proxy-source-port", "5555",
             "--proxy-dest", "127.0.0.1", "--proxy-dest-port", str(srv.lmtp_port)], timeout=60)
    assert r.returncode == 0, (r.stdout + r.stderr).decode(errors="replace")
    assert srv.mailbox(addr)["messages"] == 1
    assert srv.log_has("lmtp delivery peer=203.0.113.9:5555")


# ------------------------------------------------------------------------------------------
# floods, slowloris, brute force, command rate


def test_idle_connection_flood(server_factory):
    srv = server_factory(args=["--max-connections-per-ip", "20", "--login-timeout", "3"],
                         name="flood")
    addr, pw = srv.create_user()
    flood = []
    try:
        for _ in range(20):
            flood.append(connect(srv.pop3_port, source="127.0.0.1"))
        for s in flood:
            assert recv_line(s).startswith(b"+OK")
        with connect(srv.pop3_port, source="127.0.0.1") as s:
            assert recv_line(s) == b"-ERR [SYS/TEMP] Too many connections, try again later.\r\n"
        # others are served during the flood
        with Pop3Raw(srv.pop3_port, source="127.0.0.2") as p:
            p.login(addr, pw)
            assert p.stat() == (0, 0)
            p.quit()
        # the idle ones are cut at the login deadline, and the slots come back
        start = time.monotonic()
        for s in flood:
            assert recv_line(s, limit=10) == b"-ERR Disconnected: no login in time.\r\n"
            assert closed_without_reply(s)
        assert time.monotonic() - start < 6
        with Pop3Raw(srv.pop3_port, source="127.0.0.1") as p:
            p.login(addr, pw)
            p.quit()
    finally:
        for s in flood:
            s.close()


def test_slowloris_trickle_is_cut_at_the_login_deadline(server_factory):
    srv = server_factory(args=["--login-timeout", "2"], name="slowloris")
    with connect(srv.pop3_port) as s:
        recv_line(s)
        start = time.monotonic()
        closed = False
        for b in b"USER someone@example.com and more and more and more\r\n" * 4:
            try:
                s.sendall(bytes([b]))
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            time.sleep(0.25)
            if time.monotonic() - start > 6:
                break
        data = b""
        try:
            s.settimeout(3)
            while chunk := s.recv(4096):
                data += chunk
        except (ConnectionResetError, socket.timeout):
            pass
        assert closed or b"no login in time" in data, data
        assert time.monotonic() - start < 6
    srv.assert_serves()


def test_brute_force(server_factory):
    srv = server_factory(args=["--auth-fail-delay-ms", "100"], name="brute")
    addr, pw = srv.create_user()
    # one session: the third failure closes it
    with srv.pop3(source="127.0.0.9") as p:
        for i in range(3):
            p.cmd(f"USER {addr}")
            assert p.cmd(f"PASS guess-{i}").startswith(b"-ERR [AUTH]")
        assert p.is_closed_by_peer(5)
    # guessing spread over many source addresses: each new source waits longer
    delays = []
    for i in range(5):
        with srv.pop3(source=f"127.0.1.{i + 1}") as p:
            p.cmd(f"USER {addr}")
            t0 = time.monotonic()
            assert p.cmd("PASS wrong").startswith(b"-ERR [AUTH]")
            delays.append(time.monotonic() - t0)
    assert delays[-1] >= 4 * delays[0] > 0, delays
    # meanwhile the owner is never locked out: the right password works at once
    t0 = time.monotonic()
    with srv.session(addr, pw) as p:
        p.quit()
    assert time.monotonic() - t0 < 1.0
    # and a parallel run from many sources does not stop the server serving others
    def guess(n):
        try:
            with srv.pop3(source=f"127.0.2.{n}") as p:
                p.cmd(f"USER {addr}")
                p.cmd("PASS nope")
        except Exception:
            pass
    threads = [threading.Thread(target=guess, args=(n,)) for n in range(1, 30)]
    for t in threads:
        t.start()
    srv.assert_serves()
    for t in threads:
        t.join(30)


def test_command_rate_slows_a_flooding_session_only(server_factory):
    srv = server_factory(args=["--max-commands-per-second", "20"], name="rate")
    addr, pw = srv.create_user()
    with srv.session(addr, pw) as p:
        # burst of 10 s worth (200) passes, the next 60 are paced at 20/s
        t0 = time.monotonic()
        p.send(b"NOOP\r\n" * 260)
        for _ in range(260):
            assert p.readline() == b"+OK\r\n"
        elapsed = time.monotonic() - t0
        assert elapsed >= 2.0, elapsed
        p.quit()
    t0 = time.monotonic()
    srv.assert_serves()
    assert time.monotonic() - t0 < 2, "other sessions are not slowed"


def test_client_that_stops_reading_is_dropped(server_factory):
    srv = server_factory(args=["--idle-timeout", "2"], name="stall")
    addr, pw = srv.create_user()
    big = make_message(body_lines=["x" * 998] * 16000)  # ~16 MB
    assert srv.deliver(addr, big) == {}
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(("127.0.0.1", srv.pop3_port))
    try:
        recv_line(s)
        s.sendall(f"USER {addr}\r\nPASS {pw}\r\nRETR 1\r\n".encode())
        time.sleep(6)  # never read: the server's writes stall past the idle timeout
        received = 0
        s.settimeout(5)
        try:
            while chunk := s.recv(1 << 20):
                received += len(chunk)
        except (ConnectionResetError, socket.timeout):
            pass
        assert received < len(big), "the server gave up on the stalled RETR"
    finally:
        s.close()
    srv.assert_serves()
