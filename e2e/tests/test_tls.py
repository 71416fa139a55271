"""TLS with real clients and a test CA made here: implicit TLS (POP3S) and STLS with Python's
poplib, curl, mpop and fetchmail, all with certificate checking on; STLS command injection;
TLS 1.2 as the minimum; certificate reload without restart; LMTP STARTTLS (smtplib, swaks)."""

import poplib
import shutil
import smtplib
import socket
import ssl
import subprocess
import time

import pytest

from conftest import free_port, make_message, server_binary, clean_env
from security_helpers import (TestPKI, connect, peer_cn, recv_line, recv_until)
from test_clients import crlf, fetchmail, fetchmail_env, maildir_messages, mpop, need, run, MDA_SCRIPT


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return TestPKI(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def tls_server(server_factory, pki):
    pop3s_port = free_port()
    srv = server_factory(args=[*pki.server_args(), "--pop3s", f"127.0.0.1:{pop3s_port}",
                               "--lmtp-starttls", "--tls-reload-interval", "1",
                               "--auth-fail-delay-ms", "20"], name="tls")
    srv.pop3s_port = pop3s_port
    return srv


def deliver_one(srv, addr):
    msg = make_message()
    assert srv.deliver(addr, msg) == {}
    return msg


# ------------------------------------------------------------------------------------------
# Python poplib


def test_poplib_pop3_ssl_checks_the_certificate_and_reads_mail(tls_server, pki):
    addr, pw = tls_server.create_user()
    msg = deliver_one(tls_server, addr)
    p = poplib.POP3_SSL("localhost", tls_server.pop3s_port, context=pki.client_context(), timeout=20)
    try:
        assert p.sock.version() in ("TLSv1.3", "TLSv1.2")
        assert peer_cn(p.sock) == "localhost"
        caps = p.capa()
        assert "STLS" not in caps, "no STLS on an implicit-TLS connection"
        assert "USER" in caps and "PLAIN" in caps["SASL"]
        p.user(addr)
        p.pass_(pw)
        _, lines, _ = p.retr(1)
        assert b"\r\n".join(lines).endswith(msg.rstrip(b"\r\n"))
    finally:
        p.quit()


def test_poplib_stls_upgrades_the_plain_listener(tls_server, pki):
    addr, pw = tls_server.create_user()
    deliver_one(tls_server, addr)
    p = poplib.POP3("localhost", tls_server.pop3_port, timeout=20)
    try:
        assert "STLS" in p.capa()
        p.stls(context=pki.client_context())
        assert isinstance(p.sock, ssl.SSLSocket)
        caps = p.capa()
        assert "STLS" not in caps, caps
        p.user(addr)
        p.pass_(pw)
        assert p.stat()[0] == 1
        with pytest.raises(poplib.error_proto):
            p._shortcmd("STLS")  # already logged in (and already TLS)
    finally:
        p.quit()


def test_wrong_ca_is_refused_by_the_client(tls_server, tmp_path):
    other = TestPKI(tmp_path / "other", ca_name="some other CA")
    with pytest.raises(ssl.SSLCertVerificationError):
        poplib.POP3_SSL("localhost", tls_server.pop3s_port, context=other.client_context(), timeout=10)
    tls_server.assert_serves()


# ------------------------------------------------------------------------------------------
# curl


def test_curl_pop3s_and_stls_with_ssl_reqd(tls_server, pki, tmp_path):
    addr, pw = tls_server.create_user()
    msg = deliver_one(tls_server, addr)
    curl = need("curl")
    base = [curl, "-sS", "--max-time", "30", "--cacert", str(pki.ca_path), "-u", f"{addr}:{pw}"]
    r = run([*base, f"pop3s://localhost:{tls_server.pop3s_port}/1"])
    assert r.returncode == 0, r.stderr
    assert crlf(r.stdout).endswith(msg)
    r = run([*base, "--ssl-reqd", f"pop3://localhost:{tls_server.pop3_port}/1"])
    assert r.returncode == 0, r.stderr
    assert crlf(r.stdout).endswith(msg)
    # certificate checking is really on: another CA fails (curl 60: peer certificate)
    other = TestPKI(tmp_path / "other", ca_name="some other CA")
    r = run([curl, "-sS", "--max-time", "30", "--cacert", str(other.ca_path), "-u", f"{addr}:{pw}",
             f"pop3s://localhost:{tls_server.pop3s_port}/1"])
    assert r.returncode == 60, (r.returncode, r.stderr)


def test_curl_ssl_reqd_fails_where_tls_is_not_offered(server, user):
    addr, pw = user
    r = run([need("curl"), "-sS", "--max-time", "20", "--ssl-reqd", "-u", f"{addr}:{pw}",
             f"pop3://127.0.0.1:{server.pop3_port}/"])
    assert r.returncode != 0, "curl must not fall back to cleartext"


# ------------------------------------------------------------------------------------------
# mpop and fetchmail with certificate checking


def mpop_tls_rc(tmp_path, port, addr, pw, ca, starttls: bool, auth="plain"):
    maildir = tmp_path / "Maildir"
    for sub in ("cur", "new", "tmp"):
        (maildir / sub).mkdir(parents=True, exist_ok=True)
    rc = tmp_path / "mpoprc"
    rc.write_text(f"""defaults
tls on
tls_starttls {'on' if starttls else 'off'}
tls_trust_file {ca}
tls_certcheck on
uidls_file {tmp_path}/mpop_uidls
keep on
timeout 30

account e2e
host localhost
port {port}
user {addr}
password {pw}
auth {auth}
delivery maildir {maildir}
""")
    rc.chmod(0o600)
    return rc, maildir


@pytest.mark.parametrize("starttls", [False, True], ids=["pop3s", "stls"])
def test_mpop_with_certificate_checking(tls_server, pki, tmp_path, starttls):
    addr, pw = tls_server.create_user()
    msg = deliver_one(tls_server, addr)
    port = tls_server.pop3_port if starttls else tls_server.pop3s_port
    rc, maildir = mpop_tls_rc(tmp_path, port, addr, pw, pki.ca_path, starttls)
    r = mpop(rc, "e2e", home=tmp_path)
    assert r.returncode == 0, (r.stdout + r.stderr).decode(errors="replace")
    got = maildir_messages(maildir)
    assert len(got) == 1 and crlf(got[0]).endswith(msg)
    # and with a CA that did not sign the server certificate: refused before any login
    other = TestPKI(tmp_path / "other", ca_name="some other CA")
    xdir = tmp_path / "x"
    xdir.mkdir()
    rc, _ = mpop_tls_rc(xdir, port, addr, pw, other.ca_path, starttls)
    r = mpop(rc, "e2e", home=tmp_path)
    assert r.returncode != 0
    assert b"certificate" in (r.stdout + r.stderr).lower()


@pytest.mark.parametrize("implicit", [True, False], ids=["pop3s", "stls"])
def test_fetchmail_with_sslcertck(tls_server, pki, tmp_path, implicit):
    addr, pw = tls_server.create_user()
    msg = deliver_one(tls_server, addr)
    out = tmp_path / "out"
    out.mkdir()
    mda = tmp_path / "mda.sh"
    mda.write_text(MDA_SCRIPT.format(out=out))
    mda.chmod(0o755)
    port = tls_server.pop3s_port if implicit else tls_server.pop3_port
    tls = "ssl" if implicit else 'sslproto "tls1.2+"'
    rc = tmp_path / "fetchmailrc"
    rc.write_text(f"""set no syslog
set no bouncemail
poll localhost protocol pop3 port {port} uidl timeout 30
  user "{addr}" password "{pw}" {tls} sslcertck sslcertfile "{pki.ca_path}"
  keep
  mda "{mda}"
""")
    rc.chmod(0o600)
    r = fetchmail(rc, tmp_path)
    log = (r.stdout + r.stderr).decode(errors="replace")
    assert r.returncode == 0, log
    got = [f.read_bytes() for f in out.glob("msg.*")]
    assert len(got) == 1 and crlf(got[0]).endswith(msg), log


# ------------------------------------------------------------------------------------------
# STLS injection (CVE-2011-0411 class) and protocol versions


def test_stls_injection_pipelined_plaintext_is_discarded(tls_server, pki):
    addr, pw = tls_server.create_user()
    s = connect(tls_server.pop3_port)
    try:
        assert recv_line(s).startswith(b"+OK")
        # one write: STLS plus commands an attacker injected behind it
        s.sendall(f"STLS\r\nCAPA\r\nUSER {addr}\r\nPASS {pw}\r\n".encode())
        assert recv_line(s) == b"+OK Begin TLS negotiation now.\r\n"
        s.settimeout(0.5)
        with pytest.raises(socket.timeout):
            s.recv(1)  # nothing else was answered in cleartext
        s = tls = pki.client_context().wrap_socket(s, server_hostname="localhost")
        tls.settimeout(1.0)
        with pytest.raises((socket.timeout, TimeoutError)):
            tls.recv(1)  # and nothing was executed after the handshake either
        tls.sendall(b"CAPA\r\n")
        caps = recv_until(tls, b"\r\n.\r\n")
        assert b"\r\nSTLS\r\n" not in caps
        tls.sendall(f"PASS {pw}\r\n".encode())
        assert recv_line(tls).startswith(b"-ERR"), "the injected USER must not have been kept"
        tls.sendall(b"QUIT\r\n")
        assert recv_line(tls).startswith(b"+OK")
    finally:
        s.close()


def handshake(port, pki, min_version, max_version):
    ctx = pki.client_context()
    ctx.minimum_version = min_version
    ctx.maximum_version = max_version
    if max_version < ssl.TLSVersion.TLSv1_2:
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    with connect(port) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
            return tls.version()


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion:DeprecationWarning")
def test_tls_12_is_the_minimum(tls_server, pki):
    v = ssl.TLSVersion
    assert handshake(tls_server.pop3s_port, pki, v.TLSv1_3, v.TLSv1_3) == "TLSv1.3"
    assert handshake(tls_server.pop3s_port, pki, v.TLSv1_2, v.TLSv1_2) == "TLSv1.2"
    for old in (v.TLSv1, v.TLSv1_1):
        with pytest.raises(ssl.SSLError) as e:
            handshake(tls_server.pop3s_port, pki, old, old)
        # refused by the server with an alert (rustls answers handshake_failure: no common
        # version), or the client library already refuses to offer it; either way no session
        # below TLS 1.2 exists
        assert any(w in str(e.value).upper() for w in ("ALERT", "VERSION", "NO_PROTOCOLS")), e.value
    r = run(["openssl", "s_client", "-connect", f"127.0.0.1:{tls_server.pop3s_port}", "-tls1_1",
             "-cipher", "DEFAULT@SECLEVEL=0"], input=b"", timeout=20)
    assert r.returncode != 0
    tls_server.assert_serves()


def test_plaintext_client_on_the_pop3s_port_is_dropped(tls_server):
    with connect(tls_server.pop3s_port) as s:
        s.sendall(b"USER x\r\nPASS y\r\n")
        s.settimeout(20)
        try:
            data = s.recv(100)
        except ConnectionResetError:
            data = b""
        assert not data.startswith(b"+OK") and not data.startswith(b"-ERR"), data
    tls_server.assert_serves()


# ------------------------------------------------------------------------------------------
# certificate reload


def served_cn(port, pki) -> str:
    with connect(port) as raw:
        with pki.client_context().wrap_socket(raw, server_hostname="localhost") as tls:
            return peer_cn(tls)


def wait_for_cn(port, pki, cn, limit=10.0) -> bool:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if served_cn(port, pki) == cn:
            return True
        time.sleep(0.2)
    return False


def test_certificate_reloaded_on_change_and_broken_files_keep_the_old_one(tls_server, pki, tmp_path):
    port = tls_server.pop3s_port
    assert served_cn(port, pki) == "localhost"
    # an open session survives the rotation
    addr, pw = tls_server.create_user()
    p = poplib.POP3_SSL("localhost", port, context=pki.client_context(), timeout=20)
    p.user(addr)
    p.pass_(pw)
    pki.issue("rotated-1.popfleet.test", pki.cert_path, pki.key_path)
    assert wait_for_cn(port, pki, "rotated-1.popfleet.test"), tls_server.log_tail()
    assert p.stat() == (0, 0)
    p.quit()

    # a broken certificate: logged, old pair keeps serving
    offset = tls_server.log_size()
    good_cert = pki.cert_path.read_bytes()
    pki.cert_path.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    time.sleep(2.5)
    assert served_cn(port, pki) == "rotated-1.popfleet.test"
    assert "not reloaded" in tls_server.log_text(offset), tls_server.log_text(offset)
    # a key that does not match the certificate: same
    other_key = tmp_path / "other-key.pem"
    pki.issue("unused.popfleet.test", tmp_path / "unused.pem", other_key)
    pki.cert_path.write_bytes(good_cert)
    pki.key_path.write_bytes(other_key.read_bytes())
    time.sleep(2.5)
    assert served_cn(port, pki) == "rotated-1.popfleet.test"
    # a good pair again is picked up
    pki.issue("rotated-2.popfleet.test", pki.cert_path, pki.key_path)
    assert wait_for_cn(port, pki, "rotated-2.popfleet.test")
    tls_server.assert_serves()


def test_server_refuses_to_start_with_a_broken_pair(pki, tmp_path):
    other_key = tmp_path / "k.pem"
    pki.issue("x.popfleet.test", tmp_path / "c.pem", other_key)
    r = subprocess.run([server_binary(), "serve", "--data-dir", str(tmp_path / "d"),
                        "--pop3", f"127.0.0.1:{free_port()}", "--lmtp", f"127.0.0.1:{free_port()}",
                        "--admin", f"127.0.0.1:{free_port()}",
                        "--tls-cert", str(pki.cert_path), "--tls-key", str(other_key)],
                       capture_output=True, timeout=30, env=clean_env())
    assert r.returncode != 0
    assert b"does not belong" in r.stderr, r.stderr
    r = subprocess.run([server_binary(), "serve", "--pop3s", "127.0.0.1:1"], capture_output=True,
                       timeout=30, env=clean_env())
    assert r.returncode != 0 and b"certificate" in r.stderr, r.stderr


# ------------------------------------------------------------------------------------------
# LMTP STARTTLS


def test_lmtp_starttls_with_smtplib(tls_server, pki):
    addr, pw = tls_server.create_user()
    msg = make_message()
    with smtplib.LMTP("localhost", tls_server.lmtp_port, timeout=30) as c:
        c.ehlo()
        assert c.has_extn("starttls")
        code, _ = c.starttls(context=pki.client_context())
        assert code == 220
        c.ehlo()
        assert not c.has_extn("starttls")
        assert c.sendmail("a@example.org", [addr], msg) == {}
    with tls_server.session(addr, pw) as p:
        assert p.retr(1).endswith(msg)


def test_lmtp_starttls_with_swaks(tls_server, pki):
    addr, pw = tls_server.create_user()
    r = run([need("swaks"), "--protocol", "LMTP", "--server", f"localhost:{tls_server.lmtp_port}",
             "--to", addr, "--from", "a@example.org", "--tls", "--tls-verify",
             "--tls-ca-path", str(pki.ca_path), "--body", "over TLS"], timeout=60)
    out = (r.stdout + r.stderr).decode(errors="replace")
    assert r.returncode == 0, out
    assert "STARTTLS" in out and "Delivered" in out, out
    assert tls_server.mailbox(addr)["messages"] == 1


def test_lmtp_starttls_injection_is_discarded(tls_server, pki):
    addr, _ = tls_server.create_user()
    s = connect(tls_server.lmtp_port)
    try:
        assert recv_line(s).startswith(b"220")
        s.sendall(b"LHLO x.test\r\n")
        recv_until(s, b"250 SIZE")
        recv_line(s)
        s.sendall(f"STARTTLS\r\nMAIL FROM:<evil@x.test>\r\nRCPT TO:<{addr}>\r\n".encode())
        assert recv_line(s).startswith(b"220 2.0.0")
        s = tls = pki.client_context().wrap_socket(s, server_hostname="localhost")
        tls.sendall(b"RCPT TO:<" + addr.encode() + b">\r\n")
        assert recv_line(tls).startswith(b"503"), "the injected MAIL FROM was not executed"
        tls.sendall(b"QUIT\r\n")
    finally:
        s.close()


# ------------------------------------------------------------------------------------------
# settings from the config file and the environment


@pytest.mark.parametrize("source", ["file", "env"])
def test_tls_settings_from_file_or_env(server_factory, pki, tmp_path, source):
    pop3s_port = free_port()
    settings = {"tls_cert": str(pki.cert_path), "tls_key": str(pki.key_path),
                "pop3s": f"127.0.0.1:{pop3s_port}", "lmtp_starttls": True,
                "tls_reload_interval": 2, "max_auth_failures": 1}
    if source == "file":
        cfg = tmp_path / "pop3d.toml"
        cfg.write_text("".join(
            f"{k} = {str(v).lower() if isinstance(v, bool) else v if isinstance(v, int) else repr(v)}\n"
            .replace("'", '"') for k, v in settings.items()))
        srv = server_factory(args=["--config", str(cfg)], name=f"tls-{source}")
    else:
        env = {f"POP3D_{k.upper()}": str(v).lower() if isinstance(v, bool) else str(v)
               for k, v in settings.items()}
        srv = server_factory(env=env, name=f"tls-{source}")
    addr, pw = srv.create_user()
    p = poplib.POP3_SSL("localhost", pop3s_port, context=pki.client_context(), timeout=20)
    try:
        p.user(addr)
        with pytest.raises(poplib.error_proto):
            p.pass_("wrong")
        try:  # max_auth_failures = 1: the session is closed after one failure
            assert p.sock.recv(1) == b""
        except ssl.SSLEOFError:
            pass
    finally:
        p.close()
    with smtplib.LMTP("localhost", srv.lmtp_port, timeout=30) as c:
        c.ehlo()
        assert c.has_extn("starttls")
