"""Admin HTTP API, /metrics, the `pop3d user ...` CLI and configuration precedence."""

import re
import socket
import subprocess
import time
import urllib.parse

import pytest

from conftest import (Pop3Raw, Server, clean_env, extra_server_args, free_port,
                      make_message, server_binary, unique_address)


def login_ok(server, addr, pw) -> bool:
    with server.pop3() as p:
        p.ok(f"USER {addr}")
        reply = p.cmd(f"PASS {pw}")
        if reply.startswith(b"+OK"):
            p.quit()
            return True
        assert reply.startswith(b"-ERR [AUTH]"), reply
        return False


def assert_json_error(status, body, expected_status=None):
    assert 400 <= status < 500, (status, body)
    if expected_status:
        assert status == expected_status, (status, body)
    assert isinstance(body, dict) and isinstance(body.get("error"), str) and body["error"], body


# ------------------------------------------------------------------------------------------
# admin API


def test_health_and_ready(server):
    assert server.admin("GET", "/healthz")[0] == 200
    assert server.admin("GET", "/readyz")[0] == 200


def test_create_change_password_list_delete(server):
    addr = unique_address("admin")
    status, _ = server.admin("PUT", f"/users/{addr}", {"password": "first-pw"})
    assert 200 <= status < 300
    assert login_ok(server, addr, "first-pw")

    status, body = server.admin("GET", "/users")
    assert status == 200 and addr in body["users"]

    status, _ = server.admin("PUT", f"/users/{addr}", {"password": "second-pw"})
    assert 200 <= status < 300
    assert login_ok(server, addr, "second-pw")
    assert not login_ok(server, addr, "first-pw"), "old password still works"

    status, body = server.admin("DELETE", f"/users/{addr}")
    assert status == 204, (status, body)
    assert not login_ok(server, addr, "second-pw")
    status, body = server.admin("GET", "/users")
    assert addr not in body["users"]
    status, body = server.admin("DELETE", f"/users/{addr}")
    assert_json_error(status, body, 404)


def test_addresses_normalised_to_lower_case(server):
    local = unique_address("MiXeD").split("@")[0]
    mixed = f"{local}@Example.COM"
    lower = mixed.lower()
    status, _ = server.admin("PUT", f"/users/{mixed}", {"password": "pw-case-1"})
    assert 200 <= status < 300
    status, body = server.admin("GET", "/users")
    assert lower in body["users"]
    assert mixed not in body["users"]
    assert login_ok(server, lower, "pw-case-1")
    status, body = server.admin("GET", f"/users/{mixed}/mailbox")
    assert status == 200 and body["address"] == lower
    # a second PUT with another case updates the same account
    status, _ = server.admin("PUT", f"/users/{lower.upper()}", {"password": "pw-case-2"})
    assert 200 <= status < 300
    assert login_ok(server, lower, "pw-case-2")
    status, body = server.admin("GET", "/users")
    assert body["users"].count(lower) == 1


def test_mailbox_counts(server, user):
    addr, pw = user
    assert server.mailbox(addr) == {"address": addr, "messages": 0, "octets": 0, "quota_octets": None}
    for _ in range(3):
        assert server.deliver(addr, make_message()) == {}
    box = server.mailbox(addr)
    with server.session(addr, pw) as p:
        count, octets = p.stat()
        assert p.cmd("DELE 1").startswith(b"+OK")
        p.quit()
    assert box == {"address": addr, "messages": 3, "octets": octets, "quota_octets": None}
    assert count == 3
    box2 = server.mailbox(addr)
    assert box2["messages"] == 2 and box2["octets"] < octets


def test_delete_user_removes_mail(server):
    addr, pw = server.create_user()
    for _ in range(2):
        assert server.deliver(addr, make_message()) == {}
    assert server.mailbox(addr)["messages"] == 2
    status, _ = server.admin("DELETE", f"/users/{addr}")
    assert status == 204
    status, body = server.admin("GET", f"/users/{addr}/mailbox")
    assert_json_error(status, body, 404)
    # LMTP no longer knows the address
    rcpt, _ = server.deliver_raw([addr], make_message())
    assert rcpt[0][0] == 550
    # re-created account starts empty
    server.create_user(addr, "new-password")
    assert server.mailbox(addr)["messages"] == 0
    with server.session(addr, "new-password") as p:
        assert p.stat() == (0, 0)
        p.quit()


@pytest.mark.parametrize("case", ["bad-json", "no-password", "password-not-string",
                                  "not-an-object", "bad-address", "empty-address-local"])
def test_bad_input_json_error(server, case):
    addr = unique_address("bad")
    path = f"/users/{addr}"
    raw = None
    body = None
    if case == "bad-json":
        raw = b"{password: nope"
    elif case == "no-password":
        body = {"pass": "x"}
    elif case == "password-not-string":
        body = {"password": 12345}
    elif case == "not-an-object":
        body = ["password", "x"]
    elif case == "bad-address":
        path = "/users/" + urllib.parse.quote("no-at-sign")
        body = {"password": "x"}
    elif case == "empty-address-local":
        path = "/users/" + urllib.parse.quote("@example.com")
        body = {"password": "x"}
    status, resp = server.admin("PUT", path, body, raw=raw,
                                headers={"Content-Type": "application/json"})
    assert_json_error(status, resp)
    status, users = server.admin("GET", "/users")
    assert addr not in users["users"]


def test_percent_encoded_address_in_path(server):
    """`/users/alice%40example.com` names the same account as `/users/alice@example.com`
    (HTTP clients commonly encode '@' in a path segment)."""
    addr = unique_address("pct")
    encoded = urllib.parse.quote(addr, safe="")
    assert "%40" in encoded
    status, _ = server.admin("PUT", f"/users/{encoded}", {"password": "pct-password"})
    assert 200 <= status < 300
    status, body = server.admin("GET", "/users")
    assert addr in body["users"], body
    assert login_ok(server, addr, "pct-password")
    status, body = server.admin("GET", f"/users/{encoded}/mailbox")
    assert status == 200 and body["address"] == addr
    assert server.admin("DELETE", f"/users/{encoded}")[0] == 204


def test_unknown_mailbox_404(server):
    status, body = server.admin("GET", f"/users/{unique_address('none')}/mailbox")
    assert_json_error(status, body, 404)


def test_list_users_json_shape(server):
    created = [server.create_user(prefix="list")[0] for _ in range(3)]
    status, body = server.admin("GET", "/users")
    assert status == 200
    assert "json" in server.last_content_type
    assert isinstance(body, dict) and isinstance(body["users"], list)
    assert all(isinstance(u, str) for u in body["users"])
    for a in created:
        assert body["users"].count(a) == 1


METRIC_LINE = re.compile(
    r'^(?P<key>[a-zA-Z_:][a-zA-Z0-9_:]*'
    r'(?:\{(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*"'
    r'(?:,[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*")*,?)?\})?)'
    r' (?P<value>-?[0-9.]+(?:[eE][+-]?[0-9]+)?|NaN|\+Inf|-Inf)(?: -?\d+)?$')


def parse_metrics(text: str) -> dict[str, float]:
    samples = {}
    for ln in text.splitlines():
        if not ln.strip():
            continue
        if ln.startswith("#"):
            if ln.startswith("# TYPE"):
                parts = ln.split()
                assert len(parts) == 4 and parts[3] in (
                    "counter", "gauge", "histogram", "summary", "untyped"), ln
            elif ln.startswith("# HELP"):
                assert re.match(r"^# HELP [a-zA-Z_:][a-zA-Z0-9_:]* ", ln), ln
            continue
        m = METRIC_LINE.match(ln)
        assert m, f"not Prometheus text format: {ln!r}"
        samples[m.group("key")] = float(m.group("value"))
    return samples


def test_metrics_prometheus_text(server, user):
    status, text = server.admin("GET", "/metrics")
    assert status == 200
    # prometheus_client writes OpenMetrics (`# EOF`, counters typed without `_total`): said so.
    assert server.last_content_type.startswith("application/openmetrics-text; version=1.0.0"), server.last_content_type
    assert text.endswith("# EOF\n"), text[-200:]
    assert isinstance(text, str)
    before = parse_metrics(text)
    assert before, "no samples in /metrics"
    # activity moves at least one sample
    addr, pw = user
    assert server.deliver(addr, make_message()) == {}
    with server.session(addr, pw) as p:
        p.retr(1)
        p.quit()
    status, text = server.admin("GET", "/metrics")
    after = parse_metrics(text)
    assert after != before, "no metric changed after an LMTP delivery and a POP3 session"


def sample(samples: dict[str, float], name: str, **labels: str) -> float:
    """The sum of the samples named `name` whose labels include `labels` (0 when there is none)."""
    total = 0.0
    for key, value in samples.items():
        n, _, rest = key.partition("{")
        have = dict(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', rest))
        if n == name and all(have.get(k) == v for k, v in labels.items()):
            total += value
    return total


def test_metrics_latency_histograms_after_a_session(server, user):
    """A delivery, a good and a bad login, a RETR and a QUIT with a deletion: each new histogram and
    counter moves, with its labels, and histograms are consistent (+Inf bucket == count)."""
    status, ready = server.admin("GET", "/readyz")
    assert status == 200
    backend = ready["store"]
    _, text = server.admin("GET", "/metrics")
    before = parse_metrics(text)
    addr, pw = user
    assert server.deliver(addr, make_message()) == {}
    with server.pop3() as p:
        p.cmd(f"USER {addr}")
        assert p.cmd("PASS not-the-password").startswith(b"-ERR")
    with server.session(addr, pw) as p:
        p.retr(1)
        p.ok("DELE 1")
        assert p.quit().startswith(b"+OK")
    _, text = server.admin("GET", "/metrics")
    after = parse_metrics(text)
    moved = lambda name, **labels: sample(after, name, **labels) - sample(before, name, **labels)
    for family in ("lmtp_transaction_duration_seconds", "pop3_login_duration_seconds",
                   "pop3_quit_commit_duration_seconds", "store_operation_duration_seconds"):
        assert f"# TYPE pop3d_{family} histogram" in text, family
    assert moved("pop3d_lmtp_transaction_duration_seconds_count") >= 1
    assert moved("pop3d_pop3_login_duration_seconds_count", mechanism="password", result="ok") >= 1
    assert moved("pop3d_pop3_login_duration_seconds_count", mechanism="password", result="bad_credentials") >= 1
    assert moved("pop3d_auth_failures_total", mechanism="password", reason="wrong_password") >= 1
    assert moved("pop3d_pop3_quit_commit_duration_seconds_count") >= 1
    ops = "pop3d_store_operation_duration_seconds_count"
    for op in ("get_account", "put_chunk", "listing", "get_chunk", "unlink"):
        assert moved(ops, backend=backend, operation=op) >= 1, op
    # The commit: `link_remembered` when the delivery is remembered for retries (ADR 8), else `link`.
    assert moved(ops, backend=backend, operation="link") + moved(ops, backend=backend, operation="link_remembered") >= 1
    # The deletion's content goes after the reply: the reaper's call shows up a moment later.
    deadline = time.time() + 10
    while sample(after, "pop3d_store_operation_duration_seconds_count", operation="delete_content") <= \
            sample(before, "pop3d_store_operation_duration_seconds_count", operation="delete_content"):
        assert time.time() < deadline, "no delete_content call timed after QUIT"
        time.sleep(0.2)
        after = parse_metrics(server.admin("GET", "/metrics")[1])
    inf = sample(after, "pop3d_lmtp_transaction_duration_seconds_bucket", le="+Inf")
    assert inf == sample(after, "pop3d_lmtp_transaction_duration_seconds_count") >= 1
    assert sample(after, "pop3d_store_errors_total") == sample(before, "pop3d_store_errors_total"), \
        "a healthy session made store errors"


# ------------------------------------------------------------------------------------------
# CLI


def cli(*args, url: str | None = None, stdin: str | None = None, env=None, timeout=30):
    """`pop3d user [--admin-url URL] ARGS...` (the option placed where `pop3d user --help`
    documents it)."""
    pre = ["--admin-url", url] if url else []
    return subprocess.run([server_binary(), "user", *pre, *args],
                          input=(stdin or "").encode(), capture_output=True, timeout=timeout,
                          env=clean_env(**(env or {})))


def test_cli_user_add_passwd_del_list(server):
    url = server.admin_url
    addr = unique_address("cli")
    r = cli("add", addr, url=url, stdin="cli-first pw\n")
    assert r.returncode == 0, r.stderr.decode()
    assert login_ok(server, addr, "cli-first pw"), "password from stdin's first line"

    r = cli("list", url=url)
    assert r.returncode == 0, r.stderr.decode()
    assert addr in r.stdout.decode().split(), r.stdout

    r = cli("passwd", addr, url=url, stdin="cli-second\nignored second line\n")
    assert r.returncode == 0, r.stderr.decode()
    assert login_ok(server, addr, "cli-second")
    assert not login_ok(server, addr, "cli-first pw")

    r = cli("del", addr, url=url)
    assert r.returncode == 0, r.stderr.decode()
    status, body = server.admin("GET", "/users")
    assert addr not in body["users"]
    r = cli("list", url=url)
    assert addr not in r.stdout.decode().split()

    r = cli("del", addr, url=url)
    assert r.returncode != 0, "deleting an unknown user must fail"


def test_cli_admin_url_after_subcommand(server):
    """The contract says every `user` subcommand takes --admin-url; a user writes it after
    the subcommand too (`pop3d user add ADDR --admin-url URL`)."""
    addr = unique_address("clipos")
    r = cli("add", addr, "--admin-url", server.admin_url, stdin="pos-password\n")
    assert r.returncode == 0, r.stderr.decode()
    assert login_ok(server, addr, "pos-password")


def test_cli_admin_url_from_env(server):
    addr = unique_address("clienv")
    env = {"POP3D_ADMIN_URL": server.admin_url}
    r = cli("add", addr, stdin="env-password\n", env=env)
    assert r.returncode == 0, r.stderr.decode()
    r = cli("list", env=env)
    assert addr in r.stdout.decode().split()
    assert login_ok(server, addr, "env-password")


def test_cli_unreachable_admin_fails(server):
    r = cli("list", url=f"http://127.0.0.1:{free_port()}")
    assert r.returncode != 0


# ------------------------------------------------------------------------------------------
# configuration precedence: flag > env > file > default


def listening(port: int) -> bool:
    try:
        p = Pop3Raw(port, timeout=3)
    except OSError:
        return False
    try:
        return p.greeting.startswith(b"+OK")
    finally:
        p.close()


def start_raw(tmp_path, name, args, env, admin_port):
    """Start pop3d with exactly `args` (plus POPFLEET_E2E_SERVER_ARGS); returns the proc."""
    srv = Server(tmp_path / name, name=name)
    srv.admin_port = admin_port
    srv.command = lambda: [server_binary(), "serve", *args, *extra_server_args()]
    srv.env = env
    srv.start()
    return srv


def port_free(port: int) -> bool:
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()


@pytest.mark.parametrize("winner", ["flag", "env", "file", "default"])
def test_config_precedence(tmp_path, winner, request):
    from conftest import _active_servers
    file_port, env_port, flag_port = free_port(), free_port(), free_port()
    if winner == "default":
        if not port_free(1110):
            pytest.skip("the default POP3 port 127.0.0.1:1110 is in use on this machine")
        file_port = 1110
    admin_port, lmtp_port = free_port(), free_port()
    cfg = tmp_path / "pop3d.toml"
    pop3_line = "" if winner == "default" else f'pop3 = "127.0.0.1:{file_port}"'
    cfg.write_text(f'''data_dir = "{tmp_path / 'data'}"
{pop3_line}
lmtp = "127.0.0.1:{lmtp_port}"
admin = "127.0.0.1:{admin_port}"
idle_timeout = 300
''')
    args = ["--config", str(cfg)]
    env = {}
    if winner in ("flag", "env"):
        env["POP3D_POP3"] = f"127.0.0.1:{env_port}"
    if winner == "flag":
        args += ["--pop3", f"127.0.0.1:{flag_port}"]
    srv = start_raw(tmp_path, f"prec-{winner}", args, env, admin_port)
    _active_servers.setdefault(request.node.nodeid, []).append((srv, 0))
    try:
        expected = {"flag": flag_port, "env": env_port, "file": file_port,
                    "default": 1110}[winner]
        assert listening(expected), f"POP3 not on the {winner} port"
        for other in {file_port, env_port, flag_port} - {expected}:
            assert not listening(other), f"POP3 also/instead on port {other}"
    finally:
        srv.stop()


def test_config_file_env_for_other_keys(tmp_path, request):
    """Env beats file for a numeric key (idle timeout) and data_dir/admin come from the
    file: the server with idle_timeout=600 in the file and POP3D_IDLE_TIMEOUT=2 closes an
    idle session within a few seconds."""
    from conftest import _active_servers
    pop3_port, admin_port, lmtp_port = free_port(), free_port(), free_port()
    cfg = tmp_path / "pop3d.toml"
    cfg.write_text(f'''data_dir = "{tmp_path / 'data'}"
pop3 = "127.0.0.1:{pop3_port}"
lmtp = "127.0.0.1:{lmtp_port}"
admin = "127.0.0.1:{admin_port}"
idle_timeout = 600
max_bad_commands = 50
''')
    srv = start_raw(tmp_path, "keys", ["--config", str(cfg), "--max-bad-commands", "2"],
                    {"POP3D_IDLE_TIMEOUT": "2", "POP3D_MAX_BAD_COMMANDS": "30"}, admin_port)
    _active_servers.setdefault(request.node.nodeid, []).append((srv, 0))
    try:
        p = Pop3Raw(pop3_port)
        t0 = time.monotonic()
        p.settimeout(15)
        data = b""
        try:
            while chunk := p.sock.recv(4096):
                data += chunk
        except ConnectionResetError:
            pass
        elapsed = time.monotonic() - t0
        p.close()
        assert elapsed < 10, f"env POP3D_IDLE_TIMEOUT=2 not applied (closed after {elapsed:.1f}s)"
        assert data.startswith(b"-ERR"), data
        # flag max-bad-commands=2 beats env 30 and file 50
        with Pop3Raw(pop3_port) as p:
            for i in range(3):
                assert p.cmd(f"BAD{i}").startswith(b"-ERR")
            assert p.is_closed_by_peer(5)
        # data_dir came from the file (only checkable for the embedded store)
        if not extra_server_args():
            status, _ = srv.admin("PUT", f"/users/{unique_address('cfg')}", {"password": "x-password"})
            assert 200 <= status < 300
            data_dir = tmp_path / "data"
            assert data_dir.is_dir() and any(data_dir.iterdir()), "data_dir from file unused"
    finally:
        srv.stop()


def check_settings(srv: Server, pop3_port: int, lmtp_port: int, hostname: str):
    """Observe max_message_size=7000, hostname, max_connections_per_ip=2, max_bad_commands=2,
    auth_fail_delay_ms=100, idle_timeout=3 on a running server."""
    from conftest import LmtpRaw
    with LmtpRaw(lmtp_port) as c:
        assert hostname.encode() in b" ".join(c.greeting[1]), c.greeting
        _, lines = c.lhlo()
        size = [ln for ln in lines if ln.upper().startswith(b"SIZE")]
        assert size and size[0].split()[1] == b"7000", lines
    addr, pw = srv.create_user()
    # max_bad_commands = 2
    with Pop3Raw(pop3_port) as p:
        for i in range(3):
            assert p.cmd(f"BAD{i}").startswith(b"-ERR")
        assert p.is_closed_by_peer(5)
    # auth_fail_delay_ms = 100 (the default would be 1000)
    with Pop3Raw(pop3_port, source="127.0.0.4") as p:
        p.ok(f"USER {addr}")
        t0 = time.monotonic()
        assert p.cmd("PASS wrong").startswith(b"-ERR [AUTH]")
        p.multi("CAPA")
        elapsed = time.monotonic() - t0
        assert 0.09 <= elapsed < 0.8, f"failed login took {elapsed:.2f}s"
    # max_connections_per_ip = 2
    time.sleep(0.3)
    a, b = Pop3Raw(pop3_port), Pop3Raw(pop3_port)
    try:
        with Pop3Raw(pop3_port, read_greeting=False) as c:
            assert c.readline().startswith(b"-ERR [SYS/TEMP]")
    finally:
        a.close()
        b.close()
    # idle_timeout = 3
    time.sleep(0.3)
    with Pop3Raw(pop3_port) as p:
        t0 = time.monotonic()
        assert p.is_closed_by_peer(10) or p.readline().startswith(b"-ERR")
        assert 2.5 <= time.monotonic() - t0 < 9


@pytest.mark.parametrize("source", ["file", "env"])
def test_every_setting_from_file_or_env(tmp_path, request, source):
    from conftest import _active_servers
    pop3_port, lmtp_port, admin_port = free_port(), free_port(), free_port()
    settings = {
        "data_dir": str(tmp_path / "data"),
        "pop3": f"127.0.0.1:{pop3_port}",
        "lmtp": f"127.0.0.1:{lmtp_port}",
        "admin": f"127.0.0.1:{admin_port}",
        "hostname": f"{source}-host.popfleet.test",
        "allow_insecure_auth": True,
        "idle_timeout": 3,
        "max_connections": 100,
        "max_connections_per_ip": 2,
        "max_bad_commands": 2,
        "max_message_size": 7000,
        "auth_fail_delay_ms": 100,
    }
    args, env = [], {}
    if source == "file":
        cfg = tmp_path / "pop3d.toml"
        lines = []
        for k, v in settings.items():
            if isinstance(v, bool):
                lines.append(f"{k} = {'true' if v else 'false'}")
            elif isinstance(v, int):
                lines.append(f"{k} = {v}")
            else:
                lines.append(f'{k} = "{v}"')
        cfg.write_text("\n".join(lines) + "\n")
        args = ["--config", str(cfg)]
    else:
        env = {f"POP3D_{k.upper()}": (str(v).lower() if isinstance(v, bool) else str(v))
               for k, v in settings.items()}
    srv = start_raw(tmp_path, f"all-{source}", args, env, admin_port)
    _active_servers.setdefault(request.node.nodeid, []).append((srv, 0))
    try:
        srv.pop3_port, srv.lmtp_port = pop3_port, lmtp_port
        check_settings(srv, pop3_port, lmtp_port, settings["hostname"])
    finally:
        srv.stop()


@pytest.mark.parametrize("bad", [["--idle-timeout", "soon"], ["--pop3", "not-an-address"],
                                 ["--max-message-size", "-5"], ["--no-such-flag"]])
def test_invalid_settings_fail_fast(tmp_path, bad):
    r = subprocess.run([server_binary(), "serve", "--data-dir", str(tmp_path / "d"),
                        "--pop3", f"127.0.0.1:{free_port()}", "--lmtp", f"127.0.0.1:{free_port()}",
                        "--admin", f"127.0.0.1:{free_port()}", *bad, *extra_server_args()],
                       capture_output=True, timeout=30, env=clean_env())
    assert r.returncode != 0, f"pop3d accepted {bad}"
    assert r.stderr.strip(), "no error message on stderr"
