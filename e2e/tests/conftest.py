"""End-to-end harness for pop3d: starts the real binary, talks to it with real clients.

Environment:
  POP3D_BIN                   the binary (default <repo>/target/release/pop3d)
  POPFLEET_E2E_SERVER_ARGS    extra `pop3d serve` arguments appended to every start
                              (e.g. `--store cassandra ...`), split with shlex
  POPFLEET_E2E_START_TIMEOUT  seconds to wait for /healthz (default 60)
"""

from __future__ import annotations

import base64
import json
import os
import random
import re
import shlex
import signal
import smtplib
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"
DOMAIN = "example.com"


def server_binary() -> str:
    return os.environ.get("POP3D_BIN") or str(REPO / "target" / "release" / "pop3d")


def extra_server_args() -> list[str]:
    return shlex.split(os.environ.get("POPFLEET_E2E_SERVER_ARGS", ""))


_handed_out: set[int] = set()


def free_port() -> int:
    """A port for a server the test starts later. Not from the kernel's ephemeral range
    (ip_local_port_range, 32768-60999 here): an outgoing connection made in between (a Cassandra
    driver, a client) could take it as its local port, and the server then fails to bind (seen in
    CI: "binding the LMTP listener ...: Address already in use"). Never the same port twice."""
    for _ in range(1000):
        port = random.randrange(20000, 30000)
        if port in _handed_out:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((HOST, port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise RuntimeError("no free port in 20000-29999")


def clean_env(**extra: str) -> dict[str, str]:
    """The environment for a pop3d process: without any inherited POP3D_* setting
    (so precedence tests and defaults are not disturbed), plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("POP3D_")}
    env.update(extra)
    return env


def unique_address(prefix: str = "u") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:16]}@{DOMAIN}"


def unique_token() -> str:
    return uuid.uuid4().hex


def make_message(token: str | None = None, subject: str = "test", body_lines=None,
                 sender: str = "sender@example.org", to: str = "rcpt@example.com",
                 extra_headers=()) -> bytes:
    """A CRLF-normalised RFC 5322 message (5 header lines + extra, blank line, body)."""
    token = token or unique_token()
    if body_lines is None:
        body_lines = [f"body line {i} of {token}" for i in range(1, 6)]
    headers = [
        f"From: <{sender}>",
        f"To: <{to}>",
        f"Subject: {subject}",
        f"Message-ID: <{token}@popfleet.test>",
        f"X-Token: {token}",
        *extra_headers,
    ]
    lines = headers + [""] + list(body_lines)
    return ("\r\n".join(lines) + "\r\n").encode()


def token_of(message: bytes) -> str | None:
    m = re.search(rb"^X-Token: ([0-9a-f]+)\r?$", message, re.M)
    return m.group(1).decode() if m else None


def split_delivered(retrieved: bytes, original: bytes) -> bytes:
    """RETR content = prepended trace headers + original. Returns the prefix, asserting
    that the retrieved message ends with the exact original bytes."""
    assert retrieved.endswith(original), (
        "retrieved message does not end with the delivered message\n"
        f"retrieved head: {retrieved[:600]!r}\noriginal head: {original[:300]!r}")
    return retrieved[: len(retrieved) - len(original)]


# ----------------------------------------------------------------------------------------
# Raw clients


class ConnectionClosed(Exception):
    pass


class LineSocket:
    """A TCP client with a byte buffer and exact-byte helpers."""

    def __init__(self, port: int, host: str = HOST, timeout: float = 20.0,
                 source: str | None = None):
        self.sock = socket.create_connection((host, port), timeout=timeout,
                                             source_address=(source, 0) if source else None)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()
        self.transcript: list[tuple[str, bytes]] = []

    def settimeout(self, t: float | None) -> None:
        self.sock.settimeout(t)

    def send(self, data: bytes | str) -> None:
        if isinstance(data, str):
            data = data.encode()
        self.transcript.append(("C", data))
        self.sock.sendall(data)

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionClosed(f"connection closed; unread buffer {self.buf[:200]!r}")
        self.buf += chunk

    def readline(self) -> bytes:
        """One line including its CRLF (or LF)."""
        while b"\n" not in self.buf:
            self._fill()
        i = self.buf.index(b"\n") + 1
        line = bytes(self.buf[:i])
        del self.buf[:i]
        return line

    def read_until(self, marker: bytes) -> bytes:
        while marker not in self.buf:
            self._fill()
        i = self.buf.index(marker) + len(marker)
        data = bytes(self.buf[:i])
        del self.buf[:i]
        return data

    def read_all(self) -> bytes:
        """Everything until the server closes the connection."""
        while True:
            try:
                self._fill()
            except ConnectionClosed:
                break
            except ConnectionResetError:
                break
        data = bytes(self.buf)
        self.buf = bytearray()
        return data

    def is_closed_by_peer(self, timeout: float = 5.0) -> bool:
        """True when the server closes (EOF or reset) within `timeout` and sends nothing more."""
        old = self.sock.gettimeout()
        self.sock.settimeout(timeout)
        try:
            if self.buf:
                return False
            chunk = self.sock.recv(1)
            if chunk:
                self.buf += chunk
                return False
            return True
        except ConnectionResetError:
            return True
        except socket.timeout:
            return False
        finally:
            self.sock.settimeout(old)

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class Pop3Raw(LineSocket):
    """A byte-exact POP3 client."""

    def __init__(self, port: int, host: str = HOST, timeout: float = 20.0,
                 source: str | None = None, read_greeting: bool = True):
        super().__init__(port, host, timeout, source)
        self.greeting = self.readline() if read_greeting else None

    def cmd(self, line: str | bytes) -> bytes:
        """Send one command, return its first reply line (with CRLF)."""
        if isinstance(line, str):
            line = line.encode()
        self.send(line + b"\r\n")
        return self.readline()

    def ok(self, line: str | bytes) -> bytes:
        reply = self.cmd(line)
        assert reply.startswith(b"+OK"), f"{line!r} -> {reply!r}"
        return reply

    def read_multiline(self) -> bytes:
        """The body of a multi-line reply up to and including the terminating '.\\r\\n'
        (as sent, still dot-stuffed), after the first line has been read."""
        scanned = 0
        while True:
            if self.buf.startswith(b".\r\n"):
                del self.buf[:3]
                return b".\r\n"
            if len(self.buf) >= 3 or not b".\r\n".startswith(bytes(self.buf)):
                idx = self.buf.find(b"\r\n.\r\n", max(0, scanned - 4))
                if idx >= 0:
                    end = idx + 5
                    data = bytes(self.buf[:end])
                    del self.buf[:end]
                    return data
                scanned = len(self.buf)
            self._fill()

    def multi(self, line: str | bytes) -> tuple[bytes, bytes]:
        """Send a command expecting a multi-line reply; returns (first line, raw body incl.
        terminator). If the first line is -ERR no body is read."""
        first = self.cmd(line)
        if not first.startswith(b"+OK"):
            return first, b""
        return first, self.read_multiline()

    def login(self, user: str, password: str) -> None:
        self.ok(f"USER {user}")
        self.ok(f"PASS {password}")

    def retr(self, n: int) -> bytes:
        first, body = self.multi(f"RETR {n}")
        assert first.startswith(b"+OK"), f"RETR {n} -> {first!r}"
        return unstuff(body)

    def top(self, n: int, lines: int) -> bytes:
        first, body = self.multi(f"TOP {n} {lines}")
        assert first.startswith(b"+OK"), f"TOP {n} {lines} -> {first!r}"
        return unstuff(body)

    def stat(self) -> tuple[int, int]:
        reply = self.ok("STAT")
        m = re.fullmatch(rb"\+OK (\d+) (\d+)(?: .*)?\r\n", reply)
        assert m, f"STAT reply {reply!r}"
        return int(m.group(1)), int(m.group(2))

    def list(self) -> dict[int, int]:
        first, body = self.multi("LIST")
        assert first.startswith(b"+OK"), first
        return parse_pairs(body, int)

    def uidl(self) -> dict[int, str]:
        first, body = self.multi("UIDL")
        assert first.startswith(b"+OK"), first
        return parse_pairs(body, lambda b: b.decode())

    def quit(self) -> bytes:
        reply = self.cmd("QUIT")
        self.close()
        return reply


def unstuff(body: bytes) -> bytes:
    """Un-dot-stuff a multi-line body that ends with '.\\r\\n'."""
    assert body.endswith(b".\r\n"), f"multi-line body not terminated: {body[-50:]!r}"
    assert body == b".\r\n" or body.endswith(b"\r\n.\r\n"), body[-50:]
    content = body[:-3]
    lines = content.split(b"\r\n")
    out = []
    for ln in lines:
        out.append(ln[1:] if ln.startswith(b".") else ln)
    return b"\r\n".join(out)


def parse_pairs(body: bytes, conv) -> dict:
    out = {}
    text = body[:-3] if body.endswith(b".\r\n") else body
    for ln in text.split(b"\r\n"):
        if not ln:
            continue
        m = re.fullmatch(rb"(\d+) (\S+)", ln)
        assert m, f"bad scan line {ln!r} in {body[:300]!r}"
        out[int(m.group(1))] = conv(m.group(2))
    return out


def plain_b64(user: str, password: str, authzid: str = "") -> str:
    return base64.b64encode(f"{authzid}\0{user}\0{password}".encode()).decode()


class LmtpRaw(LineSocket):
    """A byte-exact LMTP client."""

    def __init__(self, port: int, host: str = HOST, timeout: float = 30.0,
                 source: str | None = None, read_greeting: bool = True):
        super().__init__(port, host, timeout, source)
        self.greeting = self.read_reply() if read_greeting else None

    def read_reply(self) -> tuple[int, list[bytes]]:
        """A (possibly multi-line) reply: (code, [text lines without code/CRLF])."""
        lines = []
        while True:
            ln = self.readline()
            m = re.match(rb"(\d{3})([ -])(.*?)\r?\n$", ln, re.S)
            assert m, f"bad LMTP reply line {ln!r}"
            lines.append(m.group(3))
            if m.group(2) == b" ":
                return int(m.group(1)), lines

    def cmd(self, line: str | bytes) -> tuple[int, list[bytes]]:
        if isinstance(line, str):
            line = line.encode()
        self.send(line + b"\r\n")
        return self.read_reply()

    def lhlo(self, name: str = "client.popfleet.test") -> tuple[int, list[bytes]]:
        return self.cmd(f"LHLO {name}")

    def data_bytes(self, message: bytes) -> bytes:
        """Dot-stuff a CRLF message and add the terminator."""
        assert message.endswith(b"\r\n")
        stuffed = re.sub(rb"(^|\r\n)\.", rb"\1..", message)
        return stuffed + b".\r\n"


def stuff(message: bytes) -> bytes:
    return re.sub(rb"(^|\r\n)\.", rb"\1..", message)


# ----------------------------------------------------------------------------------------
# The server under test


class Server:
    def __init__(self, workdir: Path, args=(), env=None, name="pop3d",
                 data_dir: Path | None = None, store_args: list[str] | None = None,
                 host: str = HOST, prefix: list[str] | None = None):
        self.workdir = workdir
        # host: the address every listener binds; prefix: a command the server runs under,
        # e.g. `ip netns exec NS` for the partition test's second datacenter.
        self.host = host
        self.prefix = list(prefix or [])
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.data_dir = data_dir or (workdir / "data")
        self.pop3_port = free_port()
        self.lmtp_port = free_port()
        self.admin_port = free_port()
        self.args = list(args)
        # None: the run's store (POPFLEET_E2E_SERVER_ARGS); a list replaces it (e.g. another DC)
        self.store_args = store_args
        self.env = env or {}
        self.name = name
        self.log_path = workdir / f"{name}.log"
        self.proc: subprocess.Popen | None = None
        self._logf = None
        self.starts = 0
        # pop3d refuses a non-loopback admin listener without a token: give it one, and send it.
        self.admin_token: str | None = None
        if not host.startswith("127."):
            self.admin_token = uuid.uuid4().hex
            (workdir / "admin-token").write_text(self.admin_token + "\n")

    # -- process control --------------------------------------------------------------
    def command(self) -> list[str]:
        return [*self.prefix, server_binary(), "serve",
                "--data-dir", str(self.data_dir),
                "--pop3", f"{self.host}:{self.pop3_port}",
                "--lmtp", f"{self.host}:{self.lmtp_port}",
                "--admin", f"{self.host}:{self.admin_port}",
                *(["--admin-token-file", str(self.workdir / "admin-token")] if self.admin_token else []),
                *self.args,
                *(extra_server_args() if self.store_args is None else self.store_args)]

    def start(self, timeout: float | None = None) -> "Server":
        binary = server_binary()
        if not os.path.exists(binary):
            pytest.fail(f"pop3d binary not found at {binary} (set POP3D_BIN)", pytrace=False)
        self.starts += 1
        self._logf = open(self.log_path, "ab")
        self._logf.write(f"\n===== start #{self.starts}: {shlex.join(self.command())}\n".encode())
        self._logf.flush()
        self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL,
                                     stdout=self._logf, stderr=subprocess.STDOUT,
                                     env=clean_env(**self.env), cwd=self.workdir)
        self.wait_healthy(timeout)
        return self

    def wait_healthy(self, timeout: float | None = None) -> None:
        timeout = timeout or float(os.environ.get("POPFLEET_E2E_START_TIMEOUT", "60"))
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"pop3d exited with {self.proc.returncode} during start-up\n"
                            f"{self.log_tail()}", pytrace=False)
            try:
                status, _ = self.admin("GET", "/healthz", timeout=2)
                if status == 200:
                    return
                last = status
            except OSError as e:
                last = e
            time.sleep(0.05)
        pytest.fail(f"pop3d not healthy after {timeout}s (last: {last})\n{self.log_tail()}",
                    pytrace=False)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 15) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        rc = self.proc.returncode
        self._close_log()
        return rc

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self._close_log()

    def restart(self, kill: bool = False) -> "Server":
        if kill:
            self.kill9()
        else:
            self.stop()
        return self.start()

    def _close_log(self) -> None:
        if self._logf:
            self._logf.close()
            self._logf = None

    def log_text(self, offset: int = 0) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(offset)
                text = f.read().decode(errors="replace")
        except FileNotFoundError:
            return ""
        return re.sub(r"\x1b\[[0-9;]*m", "", text)

    def log_has(self, needle: str, timeout: float = 10.0) -> bool:
        """Whether the log shows `needle` within `timeout`: the server may log a refused
        connection just after it closed the socket the test was watching."""
        deadline = time.monotonic() + timeout
        while True:
            if needle in self.log_text():
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)

    def log_size(self) -> int:
        try:
            return self.log_path.stat().st_size
        except FileNotFoundError:
            return 0

    def log_tail(self, n: int = 20000) -> str:
        t = self.log_text()
        return t[-n:]

    # -- admin API ----------------------------------------------------------------------
    @property
    def admin_url(self) -> str:
        return f"http://{self.host}:{self.admin_port}"

    def admin(self, method: str, path: str, body=None, raw: bytes | None = None,
              timeout: float = 30, headers=None):
        """Returns (status, parsed JSON or text or None)."""
        data = raw
        hdrs = dict(headers or {})
        if self.admin_token:
            hdrs.setdefault("Authorization", f"Bearer {self.admin_token}")
        if body is not None:
            data = json.dumps(body).encode()
            hdrs.setdefault("Content-Type", "application/json")
        req = urllib.request.Request(self.admin_url + path, data=data, method=method,
                                     headers=hdrs)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                status, payload, ctype = resp.status, resp.read(), resp.headers.get(
                    "Content-Type", "")
        except urllib.error.HTTPError as e:
            status, payload, ctype = e.code, e.read(), e.headers.get("Content-Type", "")
        self.last_content_type = ctype
        if not payload:
            return status, None
        try:
            return status, json.loads(payload)
        except ValueError:
            return status, payload.decode(errors="replace")

    def create_user(self, address: str | None = None, password: str | None = None,
                    prefix: str = "u") -> tuple[str, str]:
        address = address or unique_address(prefix)
        password = password or ("pw-" + uuid.uuid4().hex[:12])
        status, body = self.admin("PUT", f"/users/{address}", {"password": password})
        assert 200 <= status < 300, f"PUT /users/{address} -> {status} {body}"
        return address.lower(), password

    def mailbox(self, address: str) -> dict:
        status, body = self.admin("GET", f"/users/{address}/mailbox")
        assert status == 200, f"GET mailbox {address} -> {status} {body}"
        return body

    # -- LMTP ---------------------------------------------------------------------------
    def lmtp(self) -> smtplib.LMTP:
        conn = smtplib.LMTP(self.host, self.lmtp_port, timeout=60)
        return conn

    def deliver(self, rcpt: str | list[str], message: bytes,
                sender: str = "sender@example.org") -> dict:
        """Deliver with smtplib.LMTP (single recipient per transaction: smtplib reads only
        one reply after DATA). Returns smtplib's refused dict (empty on success)."""
        rcpts = [rcpt] if isinstance(rcpt, str) else rcpt
        refused = {}
        with self.lmtp() as conn:
            for r in rcpts:
                refused.update(conn.sendmail(sender, [r], message))
        return refused

    def deliver_raw(self, rcpts: list[str], message: bytes, sender="sender@example.org",
                    mail_params: str = "") -> tuple[list, list]:
        """Deliver over a raw LMTP socket. Returns (rcpt replies, data replies)."""
        with LmtpRaw(self.lmtp_port, host=self.host) as c:
            code, _ = c.lhlo()
            assert code == 250
            code, text = c.cmd(f"MAIL FROM:<{sender}>{mail_params}")
            assert code == 250, (code, text)
            rcpt_replies = [c.cmd(f"RCPT TO:<{r}>") for r in rcpts]
            accepted = sum(1 for code, _ in rcpt_replies if code == 250)
            data_replies = []
            if accepted:
                code, text = c.cmd("DATA")
                assert code == 354, (code, text)
                c.send(c.data_bytes(message))
                data_replies = [c.read_reply() for _ in range(accepted)]
            c.cmd("QUIT")
        return rcpt_replies, data_replies

    # -- POP3 ---------------------------------------------------------------------------
    def pop3(self, **kw) -> Pop3Raw:
        kw.setdefault("host", self.host)
        return Pop3Raw(self.pop3_port, **kw)

    def session(self, user: str, password: str) -> Pop3Raw:
        p = self.pop3()
        p.login(user, password)
        return p

    def retrieve_all(self, user: str, password: str) -> list[bytes]:
        """All messages of a mailbox via POP3 RETR, in message-number order."""
        with self.session(user, password) as p:
            listing = p.list()
            msgs = [p.retr(n) for n in sorted(listing)]
            p.quit()
        return msgs

    def assert_serves(self) -> None:
        """The server still runs and serves a full deliver + POP3 session."""
        assert self.alive(), f"pop3d died (rc={self.proc.returncode})\n{self.log_tail()}"
        user, pw = self.create_user(prefix="alive")
        msg = make_message()
        assert self.deliver(user, msg) == {}
        with self.session(user, pw) as p:
            assert p.stat()[0] == 1
            assert p.retr(1).endswith(msg)
            assert p.quit().startswith(b"+OK")


# ----------------------------------------------------------------------------------------
# Fixtures


_active_servers: dict[str, list[tuple[Server, int]]] = {}


@pytest.fixture(scope="session")
def session_tmp(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("popfleet")


@pytest.fixture(scope="session")
def _shared_server(session_tmp):
    # A small failed-login delay: some tests use wrong passwords on the shared server.
    srv = Server(session_tmp / "shared", args=["--auth-fail-delay-ms", "20"], name="shared")
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
def server(_shared_server, request) -> Server:
    """The shared default server (one per test session). Use unique users per test."""
    if not _shared_server.alive():
        pytest.fail(f"shared pop3d is not running (rc={_shared_server.proc.returncode})\n"
                    f"{_shared_server.log_tail()}", pytrace=False)
    _active_servers.setdefault(request.node.nodeid, []).append(
        (_shared_server, _shared_server.log_size()))
    return _shared_server


@pytest.fixture
def server_factory(tmp_path, request):
    """Start a dedicated server: server_factory(args=[...], env={...}, start=True)."""
    started: list[Server] = []

    def make(args=(), env=None, start=True, name=None, data_dir=None,
             store_args=None, host=HOST, prefix=None) -> Server:
        srv = Server(tmp_path / (name or f"srv{len(started)}"), args=args, env=env,
                     name=name or f"srv{len(started)}", data_dir=data_dir,
                     store_args=store_args, host=host, prefix=prefix)
        started.append(srv)
        _active_servers.setdefault(request.node.nodeid, []).append((srv, 0))
        if start:
            srv.start()
        return srv

    yield make
    for srv in started:
        srv.stop()


@pytest.fixture
def user(server) -> tuple[str, str]:
    return server.create_user()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed and report.when in ("call", "setup"):
        for srv, offset in _active_servers.get(item.nodeid, []):
            text = srv.log_text(offset)
            if len(text) > 30000:
                text = "...\n" + text[-30000:]
            report.sections.append((f"pop3d log ({srv.name}, {srv.log_path})", text))
    if report.when == "teardown":
        _active_servers.pop(item.nodeid, None)


# ----------------------------------------------------------------------------------------
# Fault tests (stop/kill/pause Cassandra nodes) run apart from the rest: they disturb the
# cluster every other test uses. `--faults` selects only them; without it they are
# deselected (pytest reports them as deselected, never as passed).


def pytest_addoption(parser):
    parser.addoption("--faults", action="store_true",
                     help="run only the tests that need the two-DC cluster itself: cross-DC and faults")
    parser.addoption("--node", action="store_true",
                     help="run only the fleet tests on the real Kubernetes node (e2e/kube up --with-node)")
    parser.addoption("--seed", action="store_true",
                     help="run only the quorum tests on the six-node reference topology "
                          "(POPFLEET_CASSANDRA_TOPOLOGY=seed)")


def pytest_configure(config):
    config.addinivalue_line("markers", "faults: stops or kills Cassandra nodes; run with --faults")
    config.addinivalue_line("markers", "node: the fleet on a real Kubernetes node; run with --node")
    config.addinivalue_line("markers", "seed: quorum faults on the six-node reference topology; run with --seed")


def marker_group(item) -> str:
    for group in ("node", "seed", "faults"):
        if item.get_closest_marker(group) is not None:
            return group
    return "default"


def pytest_collection_modifyitems(config, items):
    want = next((g for g in ("node", "seed", "faults") if config.getoption(f"--{g}")), "default")
    keep, drop = [], []
    for item in items:
        (keep if marker_group(item) == want else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
