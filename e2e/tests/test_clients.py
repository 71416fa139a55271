"""Real POP3 clients against pop3d: curl, mpop, fetchmail.

fetchmail: it runs here as root, so it delivers through an MDA that the test controls
(a tiny shell script that writes each message to its own file; fetchmail runs MDAs as the
user named in FETCHMAILUSER, set to the current user). A second variant re-delivers the
fetched mail into another pop3d mailbox with `fetchmail --lmtp` (fetchmail as an LMTP
client of the same server).
"""

import os
import re
import shutil
import stat
import subprocess
import getpass
from pathlib import Path

import pytest

from conftest import make_message, token_of, unique_token


def need(tool: str) -> str:
    exe = shutil.which(tool)
    if not exe:
        pytest.fail(f"{tool} is not installed (run e2e/install-deps)")
    return exe


def run(cmd, timeout=60, env=None, input=None) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, timeout=timeout, env=env, input=input)


def crlf(b: bytes) -> bytes:
    """Normalise line endings to CRLF."""
    return re.sub(rb"\r?\n", b"\r\n", b)


def fill(server, addr, n, **kw):
    msgs = []
    for i in range(n):
        m = make_message(subject=f"client test {i + 1}",
                         body_lines=[f"body {i}", ".dot line", "..two dots", "end"], **kw)
        assert server.deliver(addr, m) == {}
        msgs.append(m)
    return msgs


# ------------------------------------------------------------------------------------------
# curl


def curl(server, addr, pw, path="/", *args):
    exe = need("curl")
    return run([exe, "-sS", "--max-time", "30", "-u", f"{addr}:{pw}", *args,
                f"pop3://127.0.0.1:{server.pop3_port}{path}"])


def test_curl_list_retr_uidl_top(server, user):
    addr, pw = user
    msgs = fill(server, addr, 2)
    with server.session(addr, pw) as p:
        sizes = p.list()
        uids = p.uidl()
        p.quit()

    r = curl(server, addr, pw, "/")
    assert r.returncode == 0, r.stderr
    listing = {int(a): int(b) for a, b in (ln.split() for ln in r.stdout.splitlines())}
    assert listing == sizes

    r = curl(server, addr, pw, "/1")
    assert r.returncode == 0, r.stderr
    assert r.stdout.endswith(msgs[0]), r.stdout[-300:]
    assert len(r.stdout) == sizes[1]

    r = curl(server, addr, pw, "/", "-X", "UIDL")
    assert r.returncode == 0, r.stderr
    got = {int(a): b.decode() for a, b in (ln.split() for ln in r.stdout.splitlines())}
    assert got == uids

    r = curl(server, addr, pw, "/", "-X", "TOP 2 0")
    assert r.returncode == 0, r.stderr
    assert r.stdout.endswith(b"\r\n\r\n")
    assert msgs[1].split(b"\r\n\r\n")[0] + b"\r\n\r\n" in r.stdout
    assert b"body 1" not in r.stdout

    r = curl(server, addr, pw, "/", "-X", "TOP 2 2")
    assert r.returncode == 0, r.stderr
    assert r.stdout.endswith(b"\r\n\r\nbody 1\r\n.dot line\r\n")


def test_curl_sasl_ir_and_dele(server, user):
    addr, pw = user
    msgs = fill(server, addr, 3)
    r = curl(server, addr, pw, "/2", "--login-options", "AUTH=PLAIN", "--sasl-ir")
    assert r.returncode == 0, r.stderr
    assert r.stdout.endswith(msgs[1])

    r = curl(server, addr, pw, "/2", "-X", "DELE", "-I")
    assert r.returncode == 0, r.stderr
    box = server.mailbox(addr)
    assert box["messages"] == 2

    r = curl(server, addr, pw, "/")
    assert r.returncode == 0, r.stderr
    assert len(r.stdout.splitlines()) == 2
    r = curl(server, addr, pw, "/2")
    assert r.stdout.endswith(msgs[2])


def test_curl_wrong_password_fails(server, user):
    addr, pw = user
    r = curl(server, addr, pw + "-wrong", "/")
    assert r.returncode == 67, (r.returncode, r.stderr)  # CURLE_LOGIN_DENIED


# ------------------------------------------------------------------------------------------
# mpop


def mpop_setup(server, tmp_path: Path, addr: str, pw: str, auth: str = "plain"):
    maildir = tmp_path / "Maildir"
    for sub in ("cur", "new", "tmp"):
        (maildir / sub).mkdir(parents=True, exist_ok=True)
    rc = tmp_path / "mpoprc"
    rc.write_text(f"""defaults
tls off
uidls_file {tmp_path}/mpop_uidls
keep on
timeout 30

account e2e
host 127.0.0.1
port {server.pop3_port}
user {addr}
password {pw}
auth {auth}
delivery maildir {maildir}
""")
    rc.chmod(stat.S_IRUSR | stat.S_IWUSR)
    return rc, maildir


def mpop(rc: Path, *args, home: Path):
    env = dict(os.environ, HOME=str(home))
    return run([need("mpop"), "-C", str(rc), *args], env=env)


def maildir_messages(maildir: Path) -> list[bytes]:
    out = []
    for sub in ("new", "cur"):
        for f in sorted((maildir / sub).iterdir()):
            out.append(f.read_bytes())
    return out


@pytest.mark.parametrize("auth", ["plain", "user"])
def test_mpop_uidl_fetch_then_delete(server, user, tmp_path, auth):
    addr, pw = user
    msgs = fill(server, addr, 3)
    rc, maildir = mpop_setup(server, tmp_path, addr, pw, auth)

    r = mpop(rc, "--serverinfo", "e2e", home=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    info = r.stdout.decode()
    for cap in ("PIPELINING", "UIDL", "TOP"):
        assert cap in info.upper(), info

    r = mpop(rc, "e2e", home=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    got = maildir_messages(maildir)
    assert len(got) == 3
    assert sorted(token_of(crlf(m)) for m in got) == sorted(token_of(m) for m in msgs)
    for m in msgs:
        assert any(crlf(g).endswith(m) for g in got), "mpop delivered altered content"
    assert server.mailbox(addr)["messages"] == 3  # keep on

    # second run: nothing new (UIDL state)
    r = mpop(rc, "e2e", home=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert len(maildir_messages(maildir)) == 3
    assert server.mailbox(addr)["messages"] == 3

    # one new message arrives: only it is fetched
    new = fill(server, addr, 1)[0]
    r = mpop(rc, "e2e", home=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    got = maildir_messages(maildir)
    assert len(got) == 4
    assert sum(1 for g in got if token_of(crlf(g)) == token_of(new)) == 1

    # keep off: retrieved messages get deleted from the server (mpop deletes new and old)
    r = mpop(rc, "--keep=off", "--only-new=off", "e2e", home=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert server.mailbox(addr)["messages"] == 0
    with server.session(addr, pw) as p:
        assert p.stat() == (0, 0)
        p.quit()


def test_mpop_wrong_password(server, user, tmp_path):
    addr, pw = user
    rc, _ = mpop_setup(server, tmp_path, addr, pw + "-wrong")
    r = mpop(rc, "e2e", home=tmp_path)
    assert r.returncode != 0
    assert b"auth" in (r.stdout + r.stderr).lower()


# ------------------------------------------------------------------------------------------
# fetchmail

MDA_SCRIPT = """#!/bin/sh
# one file per message
n=$(date +%s%N)-$$
cat > "{out}/tmp.$n" && mv "{out}/tmp.$n" "{out}/msg.$n"
"""


def fetchmail_env(home: Path) -> dict:
    env = dict(os.environ, HOME=str(home), FETCHMAILHOME=str(home))
    user = getpass.getuser()
    env["FETCHMAILUSER"] = user
    return env


def fetchmail_rc(server, home: Path, addr: str, pw: str, keep: bool, delivery: str) -> Path:
    rc = home / "fetchmailrc"
    rc.write_text(f"""set no syslog
set no bouncemail
poll 127.0.0.1 protocol pop3 port {server.pop3_port} uidl timeout 30
  user "{addr}" password "{pw}" sslproto ""
  {'keep' if keep else 'nokeep'}
  {delivery}
""")
    rc.chmod(0o600)
    return rc


def fetchmail(rc: Path, home: Path, *args):
    return run([need("fetchmail"), "-f", str(rc), "-i", str(home / "fetchids"), "--nodetach",
                "--nosyslog", "-v", *args], env=fetchmail_env(home), timeout=90)


def test_fetchmail_uidl_mda(server, user, tmp_path):
    addr, pw = user
    msgs = fill(server, addr, 3)
    out = tmp_path / "out"
    out.mkdir()
    mda = tmp_path / "mda.sh"
    mda.write_text(MDA_SCRIPT.format(out=out))
    mda.chmod(0o755)
    rc = fetchmail_rc(server, tmp_path, addr, pw, keep=True, delivery=f'mda "{mda}"')

    r = fetchmail(rc, tmp_path)
    log = (r.stdout + r.stderr).decode(errors="replace")
    assert r.returncode == 0, log
    got = [f.read_bytes() for f in sorted(out.glob("msg.*"))]
    assert len(got) == 3, log
    for m in msgs:
        assert any(crlf(g).endswith(m) for g in got), log
    assert server.mailbox(addr)["messages"] == 3

    # second run: fetchmail's UIDL list says nothing is new (exit 1 = no mail)
    r = fetchmail(rc, tmp_path)
    log = (r.stdout + r.stderr).decode(errors="replace")
    assert r.returncode == 1, log
    assert re.search(r"3 messages \(3 seen\)", log), log
    assert len(list(out.glob("msg.*"))) == 3

    # now without keep and with fetchall: everything fetched again and deleted
    rc = fetchmail_rc(server, tmp_path, addr, pw, keep=False, delivery=f'mda "{mda}"')
    r = fetchmail(rc, tmp_path, "--all")
    log = (r.stdout + r.stderr).decode(errors="replace")
    assert r.returncode == 0, log
    assert len(list(out.glob("msg.*"))) == 6
    assert server.mailbox(addr)["messages"] == 0, log


def test_fetchmail_lmtp_forward(server, tmp_path):
    """fetchmail fetches from one pop3d mailbox over POP3 and forwards into another one
    over LMTP (`lmtp` + `smtphost 127.0.0.1/PORT` + `smtpname`)."""
    src_addr, src_pw = server.create_user(prefix="fmsrc")
    dst_addr, dst_pw = server.create_user(prefix="fmdst")
    msgs = fill(server, src_addr, 2)
    rc = fetchmail_rc(server, tmp_path, src_addr, src_pw, keep=False,
                      delivery=f'lmtp smtphost "127.0.0.1/{server.lmtp_port}" '
                               f'smtpname "{dst_addr}"')
    r = fetchmail(rc, tmp_path)
    log = (r.stdout + r.stderr).decode(errors="replace")
    assert r.returncode == 0, log
    assert server.mailbox(src_addr)["messages"] == 0, log
    with server.session(dst_addr, dst_pw) as p:
        assert p.stat()[0] == 2, log
        got = [p.retr(1), p.retr(2)]
        p.quit()
    assert sorted(token_of(g) for g in got) == sorted(token_of(m) for m in msgs)
    for g in got:
        assert g.count(b"Delivered-To:") >= 2, "both deliveries add Delivered-To"
