"""SCRAM-SHA-256 and OAUTHBEARER/XOAUTH2 end to end: Python-scripted exchanges (success and
every failure path), mpop as a real SASL client (GNU SASL), curl with a bearer token, and
JWKS rotation without restart."""

import base64
import json
import poplib
import time

import pytest

from conftest import Pop3Raw, free_port, make_message
from security_helpers import (ScramClient, TestPKI, TokenIssuer, oauthbearer_ir, write_jwks,
                              xoauth2_ir)
from test_clients import crlf, maildir_messages, mpop, need, run
from test_tls import mpop_tls_rc

AUTH_FAILED = b"-ERR [AUTH] Authentication failed.\r\n"
INVALID_TOKEN = base64.b64encode(b'{"status":"invalid_token"}')


# ------------------------------------------------------------------------------------------
# SCRAM-SHA-256


def scram_login(p: Pop3Raw, user: str, password: str, initial: bool = True,
                prove_with: str | None = None) -> bytes:
    """Runs the exchange; returns the final reply line."""
    c = ScramClient(user, password)
    if initial:
        reply = p.cmd(f"AUTH SCRAM-SHA-256 {c.first()}")
    else:
        assert p.cmd("AUTH SCRAM-SHA-256") == b"+ \r\n"
        reply = p.cmd(c.first())
    assert reply.startswith(b"+ "), reply
    reply = p.cmd(c.final(reply[2:].strip().decode(), password=prove_with))
    if not reply.startswith(b"+ "):
        return reply
    assert c.check_server_final(reply[2:].strip().decode()), "server signature must verify"
    return p.cmd("")


@pytest.mark.parametrize("initial", [True, False], ids=["initial-response", "continuation"])
def test_scram_login_and_retr(server, user, initial):
    addr, pw = user
    msg = make_message()
    assert server.deliver(addr, msg) == {}
    with server.pop3() as p:
        first, body = p.multi("CAPA")
        assert b"SCRAM-SHA-256" in body
        assert scram_login(p, addr, pw, initial) == b"+OK Logged in.\r\n"
        assert p.retr(1).endswith(msg)
        p.quit()


def test_scram_failures_each_answer_auth_failed(server, user):
    addr, pw = user
    with server.pop3() as p:
        assert scram_login(p, addr, pw, prove_with="wrong") == AUTH_FAILED
        # unknown user: the same path and answer (a decoy salt), no enumeration
        assert scram_login(p, "nobody-" + addr, pw) == AUTH_FAILED
        # the session survives two failures and still logs in
        assert scram_login(p, addr, pw) == b"+OK Logged in.\r\n"
        p.quit()
    with server.pop3() as p:
        c = ScramClient(addr, pw)
        reply = p.cmd(f"AUTH SCRAM-SHA-256 {c.first()}")
        assert p.cmd("*") == b"-ERR Authentication cancelled.\r\n"
        # a client-final that continues another nonce
        reply = p.cmd(f"AUTH SCRAM-SHA-256 {c.first()}")
        final = base64.b64decode(c.final(reply[2:].strip().decode())).decode()
        tampered = final.replace(f"r={c.nonce}", f"r=X{c.nonce}")
        assert p.cmd(base64.b64encode(tampered.encode())) == AUTH_FAILED
        # channel binding requested but not offered
        cb = base64.b64encode(f"p=tls-exporter,,n={addr},r=abc".encode()).decode()
        assert p.cmd(f"AUTH SCRAM-SHA-256 {cb}") == AUTH_FAILED
        assert not p.is_closed_by_peer(0.3)
        assert scram_login(p, addr, pw, prove_with="wrong") == AUTH_FAILED
        assert p.is_closed_by_peer(5), "three failures close the session"
    server.assert_serves()


def test_scram_keys_follow_a_password_change(server):
    addr, pw = server.create_user()
    server.create_user(addr, "the-new-password")
    with server.pop3() as p:
        assert scram_login(p, addr, pw) == AUTH_FAILED
        assert scram_login(p, addr, "the-new-password") == b"+OK Logged in.\r\n"
        p.quit()


def test_mpop_scram_sha_256(server, user, tmp_path):
    """mpop (GNU SASL) as a real SCRAM client, on cleartext loopback (SCRAM sends no secret)."""
    addr, pw = user
    msg = make_message()
    assert server.deliver(addr, msg) == {}
    maildir = tmp_path / "Maildir"
    for sub in ("cur", "new", "tmp"):
        (maildir / sub).mkdir(parents=True)
    rc = tmp_path / "mpoprc"
    rc.write_text(f"""account e2e
host 127.0.0.1
port {server.pop3_port}
tls off
user {addr}
password {pw}
auth scram-sha-256
uidls_file {tmp_path}/uidls
delivery maildir {maildir}
""")
    rc.chmod(0o600)
    r = mpop(rc, "e2e", home=tmp_path)
    assert r.returncode == 0, (r.stdout + r.stderr).decode(errors="replace")
    assert crlf(maildir_messages(maildir)[0]).endswith(msg)
    log = server.log_text()
    assert "pop3 login" in log
    bad = tmp_path / "bad"
    bad.write_text(rc.read_text().replace(f"password {pw}", "password wrong"))
    bad.chmod(0o600)
    r = mpop(bad, "e2e", home=tmp_path)
    assert r.returncode != 0


# ------------------------------------------------------------------------------------------
# OAUTHBEARER and XOAUTH2


@pytest.fixture(scope="module")
def oauth_pki(tmp_path_factory):
    return TestPKI(tmp_path_factory.mktemp("oauth-pki"))


@pytest.fixture
def oauth_server(server_factory, tmp_path, oauth_pki):
    issuer = TokenIssuer()
    jwks = tmp_path / "jwks.json"
    write_jwks(jwks, issuer)
    pop3s_port = free_port()
    srv = server_factory(args=["--oauth-jwks", str(jwks), "--oauth-issuer", issuer.issuer,
                               "--oauth-audience", "pop3", "--tls-reload-interval", "1",
                               "--auth-fail-delay-ms", "20", *oauth_pki.server_args(),
                               "--pop3s", f"127.0.0.1:{pop3s_port}"], name="oauth")
    srv.issuer, srv.jwks, srv.pop3s_port = issuer, jwks, pop3s_port
    return srv


def test_oauthbearer_and_xoauth2_success(oauth_server):
    srv = oauth_server
    addr, _ = srv.create_user()
    msg = make_message()
    assert srv.deliver(addr, msg) == {}
    with srv.pop3() as p:
        first, body = p.multi("CAPA")
        assert b"OAUTHBEARER" in body and b"XOAUTH2" in body
        assert p.cmd(f"AUTH OAUTHBEARER {oauthbearer_ir(addr, srv.issuer.token(addr))}") == b"+OK Logged in.\r\n"
        assert p.retr(1).endswith(msg)
        p.quit()
    with srv.pop3() as p:
        # no authzid: the token's email claim names the mailbox; long lines are fine
        token = srv.issuer.token(addr, padding="x" * 3000)
        assert len(token) > 3000
        assert p.cmd(f"AUTH OAUTHBEARER {oauthbearer_ir(None, token)}") == b"+OK Logged in.\r\n"
        p.quit()
    with srv.pop3() as p:
        assert p.cmd("AUTH XOAUTH2") == b"+ \r\n"
        assert p.cmd(xoauth2_ir(addr, srv.issuer.token(addr))) == b"+OK Logged in.\r\n"
        p.quit()


def refused(p: Pop3Raw, line: str, answer: bytes = b"AQ==") -> None:
    reply = p.cmd(line)
    assert reply.startswith(b"+ "), reply
    assert base64.b64decode(reply[2:].strip()) in (b'{"status":"invalid_token"}',
                                                    b'{"status":"401","schemes":"bearer"}'), reply
    assert p.cmd(answer) == AUTH_FAILED


def test_oauth_failures_get_the_rfc7628_error_challenge(oauth_server):
    srv = oauth_server
    addr, _ = srv.create_user()
    other_addr, _ = srv.create_user()
    stranger = TokenIssuer(kid=srv.issuer.kid)  # same kid, different key
    tokens = {
        "expired": srv.issuer.token(addr, lifetime=-600),
        "wrong signer": stranger.token(addr),
        "wrong issuer": srv.issuer.token(addr, iss="https://evil.test"),
        "wrong audience": srv.issuer.token(addr, aud="imap"),
        "no email claim": srv.issuer.token(None),
        "unknown account": srv.issuer.token("nobody-" + addr),
        "garbage": "not.a.jwt",
    }
    for what, token in tokens.items():
        with srv.pop3() as p:
            refused(p, f"AUTH OAUTHBEARER {oauthbearer_ir(addr, token)}")
            p.quit()
    with srv.pop3() as p:
        # a valid token for someone else than the authzid named
        refused(p, f"AUTH OAUTHBEARER {oauthbearer_ir(addr, srv.issuer.token(other_addr))}")
        # XOAUTH2: Google's challenge, answered with an empty line
        refused(p, f"AUTH XOAUTH2 {xoauth2_ir(addr, tokens['expired'])}", answer=b"")
        p.quit()
    srv.assert_serves()


def test_oauthbearer_over_pop3s_with_poplib(oauth_server, oauth_pki):
    srv = oauth_server
    addr, _ = srv.create_user()
    p = poplib.POP3_SSL("localhost", srv.pop3s_port, context=oauth_pki.client_context(), timeout=20)
    try:
        assert "OAUTHBEARER" in p.capa()["SASL"]
        resp = p._shortcmd(f"AUTH OAUTHBEARER {oauthbearer_ir(addr, srv.issuer.token(addr))}")
        assert resp.startswith(b"+OK")
    finally:
        p.quit()


def test_jwks_rotation_without_restart(oauth_server):
    srv = oauth_server
    addr, _ = srv.create_user()
    new_issuer = TokenIssuer(kid="test-key-2", issuer=srv.issuer.issuer)
    with srv.pop3() as p:
        refused(p, f"AUTH OAUTHBEARER {oauthbearer_ir(addr, new_issuer.token(addr))}")
        p.quit()
    write_jwks(srv.jwks, new_issuer)
    deadline = time.monotonic() + 10
    while True:
        with srv.pop3() as p:
            reply = p.cmd(f"AUTH OAUTHBEARER {oauthbearer_ir(addr, new_issuer.token(addr))}")
            if reply.startswith(b"+OK"):
                p.quit()
                break
            p.cmd("AQ==")
        assert time.monotonic() < deadline, "the new JWKS was not picked up"
        time.sleep(0.3)
    # the retired key no longer works; a broken JWKS keeps the current keys
    srv.jwks.write_text("{ not json")
    time.sleep(2.5)
    with srv.pop3() as p:
        refused(p, f"AUTH OAUTHBEARER {oauthbearer_ir(addr, srv.issuer.token(addr))}")
        assert p.cmd(f"AUTH OAUTHBEARER {oauthbearer_ir(addr, new_issuer.token(addr))}").startswith(b"+OK")
        p.quit()


def test_curl_oauth2_bearer(oauth_server, oauth_pki):
    srv = oauth_server
    addr, _ = srv.create_user()
    msg = make_message()
    assert srv.deliver(addr, msg) == {}
    r = run([need("curl"), "-sS", "--max-time", "30", "--cacert", str(oauth_pki.ca_path),
             "--oauth2-bearer", srv.issuer.token(addr), "-u", f"{addr}:",
             f"pop3s://localhost:{srv.pop3s_port}/1"])
    assert r.returncode == 0, r.stderr
    assert crlf(r.stdout).endswith(msg)


@pytest.mark.parametrize("mechanism", ["oauthbearer", "xoauth2"])
def test_mpop_bearer_token(oauth_server, oauth_pki, tmp_path, mechanism):
    srv = oauth_server
    addr, _ = srv.create_user()
    msg = make_message()
    assert srv.deliver(addr, msg) == {}
    rc, maildir = mpop_tls_rc(tmp_path, srv.pop3s_port, addr, srv.issuer.token(addr),
                              oauth_pki.ca_path, starttls=False, auth=mechanism)
    r = mpop(rc, "e2e", home=tmp_path)
    assert r.returncode == 0, (r.stdout + r.stderr).decode(errors="replace")
    assert crlf(maildir_messages(maildir)[0]).endswith(msg)
