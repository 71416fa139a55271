"""LMTP (RFC 2033) delivery: smtplib.LMTP, raw sockets, swaks."""

import re
import shutil
import smtplib
import subprocess

import pytest

from conftest import (LmtpRaw, make_message, split_delivered, stuff, token_of, unique_address,
                      unique_token)


def rcpt_cycle(c: LmtpRaw, sender: str, rcpts: list[str], mail_params: str = ""):
    code, text = c.cmd(f"MAIL FROM:<{sender}>{mail_params}")
    assert code == 250, (code, text)
    return [c.cmd(f"RCPT TO:<{r}>") for r in rcpts]


def enhanced(text_lines: list[bytes]) -> bytes:
    m = re.match(rb"(\d\.\d{1,3}\.\d{1,3})\s", text_lines[0] + b" ")
    assert m, f"no enhanced status code in {text_lines!r}"
    return m.group(1)


# ------------------------------------------------------------------------------------------


def test_greeting_and_lhlo(server):
    with LmtpRaw(server.lmtp_port) as c:
        code, _ = c.greeting
        assert code == 220
        code, lines = c.lhlo()
        assert code == 250
        keywords = {ln.split()[0].upper() for ln in lines[1:] if ln.strip()}
        for kw in (b"PIPELINING", b"ENHANCEDSTATUSCODES", b"8BITMIME", b"SIZE"):
            assert kw in keywords, f"LHLO lacks {kw!r}: {lines}"
        size = [ln for ln in lines if ln.upper().startswith(b"SIZE")][0]
        assert re.fullmatch(rb"SIZE \d+", size.strip(), re.I), size
        assert int(size.split()[1]) == 67108864
        assert c.cmd("QUIT")[0] == 221


def test_smtplib_delivery(server, user):
    addr, pw = user
    msg = make_message(subject="via smtplib")
    with server.lmtp() as conn:
        code, _ = conn.ehlo_or_helo_if_needed() or (250, b"")
        assert conn.does_esmtp
        assert conn.has_extn("pipelining") and conn.has_extn("enhancedstatuscodes")
        refused = conn.sendmail("sender@example.org", [addr], msg)
        assert refused == {}
    with server.session(addr, pw) as p:
        assert p.stat()[0] == 1
        split_delivered(p.retr(1), msg)
        p.quit()
    assert server.mailbox(addr)["messages"] == 1


def test_smtplib_unknown_recipient_550(server):
    msg = make_message()
    with server.lmtp() as conn:
        with pytest.raises(smtplib.SMTPRecipientsRefused) as ei:
            conn.sendmail("sender@example.org", [unique_address("nobody")], msg)
        (code, text), = ei.value.recipients.values()
        assert code == 550
        assert text.startswith(b"5.1.1"), text


def test_trace_headers_prepended(server, user):
    addr, pw = user
    msg = make_message()
    assert server.deliver(addr, msg, sender="bounce-me@example.net") == {}
    with server.session(addr, pw) as p:
        content = p.retr(1)
        size = p.list()[1]
        p.quit()
    assert size == len(content)
    prefix = split_delivered(content, msg)
    assert prefix.endswith(b"\r\n")
    lines = prefix[:-2].split(b"\r\n")
    names = []
    for ln in lines:
        if ln[:1] in (b" ", b"\t"):
            assert names, "prefix starts with a continuation line"
            continue
        m = re.match(rb"([!-9;-~]+):", ln)
        assert m, f"not a header line in the prepended block: {ln!r}"
        names.append(m.group(1).lower())
    for h in (b"return-path", b"delivered-to", b"received"):
        assert names.count(h) == 1, f"{h!r} should be prepended once: {names}"
    assert names[0] == b"return-path", "Return-Path goes first (RFC 5321 4.4)"
    rp = re.search(rb"^Return-Path: *(.*)$", prefix, re.M | re.I).group(1)
    assert rp.strip() == b"<bounce-me@example.net>", rp
    dt = re.search(rb"^Delivered-To: *(.*)$", prefix, re.M | re.I).group(1)
    assert addr.encode() in dt.lower()


def test_null_sender(server, user):
    addr, pw = user
    msg = make_message()
    rcpt, data = server.deliver_raw([addr], msg, sender="")
    assert [code for code, _ in rcpt] == [250]
    assert [code for code, _ in data] == [250]
    with server.session(addr, pw) as p:
        content = p.retr(1)
        p.quit()
    prefix = split_delivered(content, msg)
    assert re.search(rb"^Return-Path: *<>\r$", prefix, re.M | re.I), prefix


def test_multi_recipient_one_reply_each_in_order(server):
    """Known and unknown recipients mixed: RCPT replies 250/550 5.1.1, then exactly one
    reply per accepted recipient after DATA, and every known mailbox gets exactly one
    copy."""
    users = [server.create_user(prefix="multi") for _ in range(3)]
    unknown = [unique_address("ghost") for _ in range(2)]
    rcpts = [users[0][0], unknown[0], users[1][0], unknown[1], users[2][0]]
    msg = make_message()
    with LmtpRaw(server.lmtp_port) as c:
        assert c.lhlo()[0] == 250
        replies = rcpt_cycle(c, "sender@example.org", rcpts)
        assert [code for code, _ in replies] == [250, 550, 250, 550, 250], replies
        assert enhanced(replies[1][1]) == b"5.1.1"
        assert enhanced(replies[3][1]) == b"5.1.1"
        assert c.cmd("DATA")[0] == 354
        c.send(c.data_bytes(msg))
        data_replies = [c.read_reply() for _ in range(3)]
        assert [code for code, _ in data_replies] == [250, 250, 250], data_replies
        for _, text in data_replies:
            assert enhanced(text).startswith(b"2.")
        # no fourth reply: the next thing we read is QUIT's 221
        code, _ = c.cmd("QUIT")
        assert code == 221, "extra reply after DATA (one per accepted recipient expected)"
    for addr, pw in users:
        with server.session(addr, pw) as p:
            assert p.stat()[0] == 1
            split_delivered(p.retr(1), msg)
            p.quit()


def test_per_recipient_reply_order(server):
    """The order of the post-DATA replies follows the RCPT order. To make the replies
    distinguishable, one accepted recipient is deleted (admin API) between RCPT and DATA:
    its reply must be a failure in its own position while the others succeed."""
    users = [server.create_user(prefix="order") for _ in range(3)]
    msg = make_message()
    with LmtpRaw(server.lmtp_port) as c:
        assert c.lhlo()[0] == 250
        replies = rcpt_cycle(c, "sender@example.org", [u for u, _ in users])
        assert [code for code, _ in replies] == [250, 250, 250]
        status, _ = server.admin("DELETE", f"/users/{users[1][0]}")
        assert status == 204
        assert c.cmd("DATA")[0] == 354
        c.send(c.data_bytes(msg))
        data_replies = [c.read_reply() for _ in range(3)]
        codes = [code for code, _ in data_replies]
        assert codes[0] == 250 and codes[2] == 250, data_replies
        assert c.cmd("QUIT")[0] == 221
    for addr, pw in (users[0], users[2]):
        assert server.mailbox(addr)["messages"] == 1
    # whatever the reply, mail for a deleted account must not surface in a new account
    # that later gets the same address
    server.create_user(users[1][0], "recreated")
    assert server.mailbox(users[1][0])["messages"] == 0, (
        f"message accepted for a deleted account ({data_replies[1]}) shows up in the "
        "re-created account")
    assert codes[1] >= 400, f"deleted mailbox got {data_replies[1]}"


def test_data_without_valid_recipient(server):
    with LmtpRaw(server.lmtp_port) as c:
        assert c.lhlo()[0] == 250
        replies = rcpt_cycle(c, "s@example.org", [unique_address("ghost")])
        assert replies[0][0] == 550
        code, _ = c.cmd("DATA")
        assert code in (503, 554), code
        assert c.cmd("QUIT")[0] == 221


@pytest.mark.parametrize("bad", [
    pytest.param(b"line one\nline two\r\n", id="bare-LF"),
    pytest.param(b"line one\rline two\r\n", id="bare-CR"),
    pytest.param(b"bare LF before the final CRLF\n\r\n", id="bare-LF-before-CRLF"),
    pytest.param(b"line\r\n\nafter an empty bare-LF line\r\n", id="bare-LF-line"),
    pytest.param(b"smuggle\n.\nMAIL FROM:<evil@example.org>\r\n", id="smuggling-LF-dot-LF"),
    pytest.param(b"smuggle\r\n.\nRSET\r\n", id="smuggling-CRLF-dot-LF"),
    pytest.param(b"smuggle\r.\rRSET\r\n", id="smuggling-CR-dot-CR"),
    pytest.param(b"bare CR before the final CRLF\r\r\n", id="bare-CR-before-CRLF"),
])
def test_bare_lf_cr_rejected(server, bad):
    """Bare LF / bare CR in DATA: one 5xx (554 5.6.0) per recipient, nothing delivered, and
    the session continues with a good transaction."""
    users = [server.create_user(prefix="bare") for _ in range(2)]
    token = unique_token()
    header = f"Subject: bare\r\nX-Token: {token}\r\n\r\n".encode()
    with LmtpRaw(server.lmtp_port) as c:
        assert c.lhlo()[0] == 250
        replies = rcpt_cycle(c, "s@example.org", [u for u, _ in users])
        assert [code for code, _ in replies] == [250, 250]
        assert c.cmd("DATA")[0] == 354
        c.send(header + bad + b".\r\n")
        data_replies = [c.read_reply() for _ in range(2)]
        for code, text in data_replies:
            assert 500 <= code < 600, data_replies
            assert code == 554 and enhanced(text) == b"5.6.0", data_replies
        # session still usable: a clean message is delivered
        good = make_message()
        replies = rcpt_cycle(c, "s@example.org", [users[0][0]])
        assert replies[0][0] == 250
        assert c.cmd("DATA")[0] == 354
        c.send(c.data_bytes(good))
        assert c.read_reply()[0] == 250
        assert c.cmd("QUIT")[0] == 221
    assert server.mailbox(users[1][0])["messages"] == 0
    with server.session(*users[0]) as p:
        assert p.stat()[0] == 1
        content = p.retr(1)
        assert content.endswith(good)
        assert token.encode() not in content
        p.quit()


def test_smuggled_transaction_not_delivered(server):
    """'\\n.\\n' is not an end of DATA: a smuggled second transaction inside the data must
    not reach the victim."""
    sender_user = server.create_user(prefix="smug")
    victim = server.create_user(prefix="victim")
    payload = (b"Subject: outer\r\n\r\nhello\n.\nMAIL FROM:<evil@example.org>\r\n"
               b"RCPT TO:<" + victim[0].encode() + b">\r\nDATA\r\nSubject: smuggled\r\n\r\n"
               b"pwned\r\n.\r\n")
    with LmtpRaw(server.lmtp_port) as c:
        assert c.lhlo()[0] == 250
        assert rcpt_cycle(c, "s@example.org", [sender_user[0]])[0][0] == 250
        assert c.cmd("DATA")[0] == 354
        c.send(payload)
        code, text = c.read_reply()
        assert code == 554, (code, text)
        code, _ = c.cmd("NOOP")
        assert code == 250, "the smuggled commands must not have been executed"
        assert c.cmd("QUIT")[0] == 221
    assert server.mailbox(victim[0])["messages"] == 0
    assert server.mailbox(sender_user[0])["messages"] == 0


def test_plus_address_delivers_to_base(server, user):
    addr, pw = user
    local, domain = addr.split("@")
    msg = make_message()
    rcpt, data = server.deliver_raw([f"{local}+folder@{domain}"], msg)
    assert [c for c, _ in rcpt] == [250] and [c for c, _ in data] == [250]
    msg2 = make_message()
    assert server.deliver(f"{local}+other+x@{domain}", msg2) == {}
    with server.session(addr, pw) as p:
        assert p.stat()[0] == 2
        assert p.retr(1).endswith(msg)
        assert p.retr(2).endswith(msg2)
        p.quit()
    # an unknown base stays unknown with a detail
    with LmtpRaw(server.lmtp_port) as c:
        c.lhlo()
        r = rcpt_cycle(c, "s@example.org", [f"ghost-{unique_token()[:8]}+x@{domain}"])
        assert r[0][0] == 550


def test_recipient_case_insensitive(server, user):
    addr, pw = user
    msg = make_message()
    assert server.deliver(addr.upper(), msg) == {}
    assert server.mailbox(addr)["messages"] == 1


def test_dot_transparency_lmtp(server, user):
    """Dot-stuffed data lines are un-stuffed when stored."""
    addr, pw = user
    msg = make_message(body_lines=[".", "..", ".x", "x.", "..."])
    with LmtpRaw(server.lmtp_port) as c:
        c.lhlo()
        rcpt_cycle(c, "s@example.org", [addr])
        assert c.cmd("DATA")[0] == 354
        c.send(stuff(msg) + b".\r\n")
        assert c.read_reply()[0] == 250
        c.cmd("QUIT")
    with server.session(addr, pw) as p:
        assert p.retr(1).endswith(msg)
        p.quit()


def test_8bitmime_body_kept(server, user):
    addr, pw = user
    token = unique_token()
    msg = (f"Subject: 8bit\r\nX-Token: {token}\r\nContent-Type: text/plain; charset=utf-8\r\n"
           "Content-Transfer-Encoding: 8bit\r\n\r\nGrüße, ☃, 日本語\r\n").encode()
    rcpt, data = server.deliver_raw([addr], msg, mail_params=" BODY=8BITMIME")
    assert [c for c, _ in data] == [250]
    with server.session(addr, pw) as p:
        assert p.retr(1).endswith(msg)
        p.quit()


def test_pipelined_envelope_one_write(server):
    """MAIL, RCPT x3 (one unknown) and DATA in a single write: replies in order."""
    users = [server.create_user(prefix="pipe") for _ in range(2)]
    ghost = unique_address("ghost")
    msg = make_message()
    with LmtpRaw(server.lmtp_port) as c:
        assert c.lhlo()[0] == 250
        c.send(f"MAIL FROM:<s@example.org>\r\nRCPT TO:<{users[0][0]}>\r\nRCPT TO:<{ghost}>\r\n"
               f"RCPT TO:<{users[1][0]}>\r\nDATA\r\n".encode())
        codes = [c.read_reply()[0] for _ in range(5)]
        assert codes == [250, 250, 550, 250, 354], codes
        c.send(c.data_bytes(msg) + b"QUIT\r\n")
        assert [c.read_reply()[0] for _ in range(2)] == [250, 250]
        assert c.read_reply()[0] == 221
    for addr, pw in users:
        with server.session(addr, pw) as p:
            assert p.retr(1).endswith(msg)
            p.quit()


def test_pipelined_lhlo_and_two_transactions(server, user):
    """Two whole transactions pipelined (LHLO...QUIT) in one write after the greeting,
    waiting only for the 354s."""
    addr, pw = user
    m1, m2 = make_message(subject="one"), make_message(subject="two")
    with LmtpRaw(server.lmtp_port) as c:
        c.send(f"LHLO x\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<{addr}>\r\nDATA\r\n".encode())
        assert c.read_reply()[0] == 250
        assert [c.read_reply()[0] for _ in range(3)] == [250, 250, 354]
        c.send(c.data_bytes(m1) + f"MAIL FROM:<b@example.org>\r\nRCPT TO:<{addr}>\r\nDATA\r\n"
               .encode())
        assert [c.read_reply()[0] for _ in range(4)] == [250, 250, 250, 354]
        c.send(c.data_bytes(m2) + b"QUIT\r\n")
        assert [c.read_reply()[0] for _ in range(2)] == [250, 221]
    with server.session(addr, pw) as p:
        assert p.retr(1).endswith(m1)
        assert p.retr(2).endswith(m2)
        p.quit()


def test_rset_clears_envelope(server, user):
    addr, pw = user
    with LmtpRaw(server.lmtp_port) as c:
        c.lhlo()
        rcpt_cycle(c, "s@example.org", [addr])
        assert c.cmd("RSET")[0] == 250
        code, _ = c.cmd("DATA")
        assert code in (503, 554), f"DATA after RSET must fail, got {code}"
        code, _ = c.cmd(f"RCPT TO:<{addr}>")
        assert code == 503, f"RCPT without MAIL must be a bad sequence, got {code}"
        assert c.cmd("QUIT")[0] == 221
    assert server.mailbox(addr)["messages"] == 0


def test_hostname_in_greeting_and_received(server_factory):
    """--hostname names the server in the LMTP greeting and the Received header."""
    srv = server_factory(args=["--hostname", "mx7.popfleet.test"], name="hostname")
    addr, pw = srv.create_user()
    with LmtpRaw(srv.lmtp_port) as c:
        code, text = c.greeting
        assert code == 220 and b"mx7.popfleet.test" in b" ".join(text), text
    msg = make_message()
    assert srv.deliver(addr, msg) == {}
    with srv.session(addr, pw) as p:
        prefix = split_delivered(p.retr(1), msg)
        p.quit()
    unfolded = re.sub(rb"\r\n[ \t]", b" ", prefix).split(b"\r\n")
    received = [h for h in unfolded if h.lower().startswith(b"received:")]
    assert len(received) == 1 and b"mx7.popfleet.test" in received[0], prefix


# ------------------------------------------------------------------------------------------
# SIZE limit (dedicated server)


@pytest.fixture
def small_server(server_factory):
    return server_factory(args=["--max-message-size", "10000"], name="small")


def test_size_advertised(small_server):
    with LmtpRaw(small_server.lmtp_port) as c:
        _, lines = c.lhlo()
        size = [ln for ln in lines if ln.upper().startswith(b"SIZE")]
        assert size and size[0].split()[1] == b"10000", lines


def test_size_param_rejected_at_mail(small_server):
    addr, pw = small_server.create_user()
    with LmtpRaw(small_server.lmtp_port) as c:
        c.lhlo()
        code, text = c.cmd("MAIL FROM:<s@example.org> SIZE=20000")
        assert code == 552, (code, text)
        assert enhanced(text).startswith(b"5.")
        code, _ = c.cmd("MAIL FROM:<s@example.org> SIZE=2000")
        assert code == 250
        assert c.cmd(f"RCPT TO:<{addr}>")[0] == 250
        assert c.cmd("DATA")[0] == 354
        msg = make_message()
        c.send(c.data_bytes(msg))
        assert c.read_reply()[0] == 250
        c.cmd("QUIT")
    assert small_server.mailbox(addr)["messages"] == 1


def test_oversized_data_552_per_recipient(small_server):
    users = [small_server.create_user() for _ in range(2)]
    big = make_message(body_lines=["z" * 70] * 300)  # ~21 KB
    assert len(big) > 20000
    rcpt, data = small_server.deliver_raw([u for u, _ in users], big)
    assert [c for c, _ in rcpt] == [250, 250]
    assert [c for c, _ in data] == [552, 552], data
    for addr, _ in users:
        assert small_server.mailbox(addr)["messages"] == 0
    # a small message still goes through, on the same server
    ok = make_message()
    rcpt, data = small_server.deliver_raw([users[0][0]], ok)
    assert [c for c, _ in data] == [250]
    small_server.assert_serves()


# ------------------------------------------------------------------------------------------
# swaks


def swaks(server, *args, timeout=60) -> subprocess.CompletedProcess:
    exe = shutil.which("swaks")
    if not exe:
        pytest.fail("swaks is not installed (run e2e/install-deps)")
    cmd = [exe, "--protocol", "LMTP", "--server", f"127.0.0.1:{server.lmtp_port}",
           "--helo", "swaks.popfleet.test", *args]
    return subprocess.run(cmd, capture_output=True, timeout=timeout)


@pytest.mark.parametrize("pipeline", [False, True], ids=["plain", "pipeline"])
def test_swaks_lmtp_delivery(server, user, pipeline):
    addr, pw = user
    token = unique_token()
    body = f"hello from swaks {token}\n.leading dot\nlast line"
    args = ["--from", "swaks@example.org", "--to", addr,
            "--header", f"Subject: swaks {token}", "--header", f"X-Token: {token}",
            "--body", body]
    if pipeline:
        args.append("--pipeline")
    r = swaks(server, *args)
    assert r.returncode == 0, r.stdout.decode() + r.stderr.decode()
    assert b"<~  250" in r.stdout or b"<~ 250" in r.stdout or b"<-  250" in r.stdout
    with server.session(addr, pw) as p:
        assert p.stat()[0] == 1
        content = p.retr(1)
        p.quit()
    assert token_of(content) == token
    assert f"hello from swaks {token}\r\n.leading dot\r\nlast line\r\n".encode() in content
    assert b"Return-Path: <swaks@example.org>" in content


def test_swaks_unknown_recipient_fails(server):
    r = swaks(server, "--from", "swaks@example.org", "--to", unique_address("ghost"))
    assert r.returncode != 0
    assert b"550 5.1.1" in r.stdout, r.stdout.decode()
