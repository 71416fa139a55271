"""POP3 behaviour: a real client (poplib) for the full flow, raw sockets for the byte-level
edge cases of the checklist (§1.2)."""

import poplib
import re
import socket
import time

import pytest

from conftest import (HOST, make_message, plain_b64, split_delivered, token_of, unique_token,
                      unstuff)

UUID_V1 = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-1[0-9a-fA-F]{3}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


def fill(server, user, n, **kw):
    """Deliver n distinct messages; returns them in delivery order."""
    msgs = []
    for i in range(n):
        m = make_message(subject=f"message {i + 1}", **kw)
        assert server.deliver(user, m) == {}
        msgs.append(m)
    return msgs


def poplib_client(server) -> poplib.POP3:
    return poplib.POP3(HOST, server.pop3_port, timeout=30)


# ------------------------------------------------------------------------------------------
# poplib: the normal flow


def test_poplib_full_flow(server, user):
    addr, pw = user
    msgs = fill(server, addr, 3)

    c = poplib_client(server)
    assert c.getwelcome().startswith(b"+OK")
    assert c.user(addr).startswith(b"+OK")
    assert c.pass_(pw).startswith(b"+OK")

    count, size = c.stat()
    assert count == 3

    resp, listing, _ = c.list()
    assert resp.startswith(b"+OK")
    sizes = {int(n): int(s) for n, s in (ln.split() for ln in listing)}
    assert sorted(sizes) == [1, 2, 3]
    assert sum(sizes.values()) == size

    resp, uidls, _ = c.uidl()
    uids = {int(n): u.decode() for n, u in (ln.split() for ln in uidls)}
    assert sorted(uids) == [1, 2, 3]
    assert len(set(uids.values())) == 3
    for u in uids.values():
        assert len(u) == 36 and UUID_V1.match(u), f"UIDL {u!r} is not a v1 TimeUUID"
    # single-message forms
    assert c.uidl(2) == f"+OK 2 {uids[2]}".encode()
    assert c.list(3) == f"+OK 3 {sizes[3]}".encode()

    # RETR: content = trace headers + original, octets == LIST size
    for n, original in enumerate(msgs, 1):
        resp, lines, octets = c.retr(n)
        assert resp.startswith(b"+OK")
        content = b"\r\n".join(lines) + b"\r\n"
        split_delivered(content, original)
        assert octets == sizes[n] == len(content)

    # TOP n 0: header block + blank line only
    resp, lines, _ = c.top(1, 0)
    assert resp.startswith(b"+OK")
    assert lines[-1] == b""
    assert b"" not in lines[:-1]
    assert b"Subject: message 1" in lines

    # DELE / RSET / DELE / QUIT
    assert c.dele(1).startswith(b"+OK")
    assert c.stat() == (2, size - sizes[1])
    assert c.rset().startswith(b"+OK")
    assert c.stat() == (3, size)
    assert c.dele(2).startswith(b"+OK")
    assert c.noop().startswith(b"+OK")
    assert c.quit().startswith(b"+OK")

    # the next session sees messages 1 and 3, renumbered, with the same UIDLs
    c = poplib_client(server)
    c.user(addr)
    c.pass_(pw)
    assert c.stat() == (2, size - sizes[2])
    _, uidls, _ = c.uidl()
    assert [ln.split()[1].decode() for ln in uidls] == [uids[1], uids[3]]
    _, lines, _ = c.retr(2)
    assert (b"\r\n".join(lines) + b"\r\n").endswith(msgs[2])
    c.quit()
    assert server.mailbox(addr)["messages"] == 2


def test_poplib_empty_mailbox(server, user):
    addr, pw = user
    c = poplib_client(server)
    c.user(addr)
    c.pass_(pw)
    assert c.stat() == (0, 0)
    resp, listing, _ = c.list()
    assert resp.startswith(b"+OK") and listing == []
    resp, uidls, _ = c.uidl()
    assert resp.startswith(b"+OK") and uidls == []
    with pytest.raises(poplib.error_proto):
        c.retr(1)
    assert c.quit().startswith(b"+OK")


def test_large_message_round_trip(server, user):
    """An 8 MB message delivered over LMTP and retrieved with poplib, byte for byte;
    also a raw RETR whose octet count equals LIST."""
    addr, pw = user
    token = unique_token()
    line_count = 8 * 1024 * 1024 // 78
    body = [f"{i:08d} {token} " + "x" * (76 - 9 - 33 - 1) for i in range(line_count)]
    body[1000] = ".starts with a dot"
    body[2000] = "."
    original = make_message(token, subject="big", body_lines=body)
    assert len(original) > 8_000_000
    assert server.deliver(addr, original) == {}

    c = poplib_client(server)
    c.user(addr)
    c.pass_(pw)
    size = int(c.list(1).split()[2])
    resp, lines, octets = c.retr(1)
    content = b"\r\n".join(lines) + b"\r\n"
    split_delivered(content, original)
    assert octets == size == len(content)
    c.quit()

    with server.session(addr, pw) as p:
        raw = p.retr(1)
        assert raw == content
        p.quit()


# ------------------------------------------------------------------------------------------
# §1.2 edge cases


def test_deleted_message_references_err(server, user):
    """#1: after DELE 1 every direct reference to message 1 is -ERR, and STAT/LIST/UIDL
    leave it out."""
    addr, pw = user
    fill(server, addr, 3)
    with server.session(addr, pw) as p:
        count, size = p.stat()
        sizes = p.list()
        uids = p.uidl()
        assert p.cmd("DELE 1").startswith(b"+OK")
        assert p.stat() == (count - 1, size - sizes[1])
        assert p.list() == {2: sizes[2], 3: sizes[3]}
        assert p.uidl() == {2: uids[2], 3: uids[3]}
        for cmd in ("LIST 1", "RETR 1", "TOP 1 0", "UIDL 1", "DELE 1"):
            reply = p.cmd(cmd)
            assert reply.startswith(b"-ERR"), f"{cmd} on a deleted message -> {reply!r}"
        # untouched messages still work, numbers unchanged
        assert p.cmd("LIST 2") == f"+OK 2 {sizes[2]}\r\n".encode()
        assert p.cmd("UIDL 3") == f"+OK 3 {uids[3]}\r\n".encode()
        assert len(p.retr(2)) == sizes[2]
        assert p.quit().startswith(b"+OK")


@pytest.mark.parametrize("cmd", ["RETR 0", "RETR 4", "RETR x", "LIST 9", "UIDL 0", "TOP 4 0",
                                 "DELE 99", "TOP 1", "TOP 1 x", "RETR"])
def test_bad_message_numbers_err(server, user, cmd):
    addr, pw = user
    fill(server, addr, 3)
    with server.session(addr, pw) as p:
        reply = p.cmd(cmd)
        assert reply.startswith(b"-ERR"), f"{cmd} -> {reply!r}"
        # the session goes on and nothing was marked deleted
        assert p.stat()[0] == 3
        p.quit()
    assert server.mailbox(addr)["messages"] == 3


def test_rset_then_quit_deletes_nothing(server, user):
    """#2"""
    addr, pw = user
    fill(server, addr, 2)
    with server.session(addr, pw) as p:
        uids = p.uidl()
        assert p.cmd("DELE 1").startswith(b"+OK")
        assert p.cmd("DELE 2").startswith(b"+OK")
        assert p.stat() == (0, 0)
        assert p.cmd("RSET").startswith(b"+OK")
        assert p.stat()[0] == 2
        assert p.quit().startswith(b"+OK")
    with server.session(addr, pw) as p:
        assert p.uidl() == uids
        p.quit()


def test_dropped_connection_deletes_nothing(server, user):
    """#3: DELE then a dropped TCP connection (no QUIT) deletes nothing."""
    addr, pw = user
    fill(server, addr, 2)
    p = server.session(addr, pw)
    uids = p.uidl()
    assert p.cmd("DELE 1").startswith(b"+OK")
    assert p.cmd("DELE 2").startswith(b"+OK")
    p.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    p.close()  # RST
    p2 = server.session(addr, pw)
    p2.cmd("DELE 1")
    p2.close()  # FIN without QUIT
    time.sleep(0.5)
    with server.session(addr, pw) as p:
        assert p.uidl() == uids
        p.quit()
    assert server.mailbox(addr)["messages"] == 2


def test_double_dele(server, user):
    """#4"""
    addr, pw = user
    fill(server, addr, 2)
    with server.session(addr, pw) as p:
        assert p.cmd("DELE 1").startswith(b"+OK")
        reply = p.cmd("DELE 1")
        assert reply.startswith(b"-ERR"), reply
        assert p.stat()[0] == 1
        assert p.quit().startswith(b"+OK")
    assert server.mailbox(addr)["messages"] == 1


def test_top_exact_lines(server, user):
    """#5: TOP n 0 = all headers + blank line; TOP n 2 = that + exactly two body lines;
    TOP n past the body = the whole message."""
    addr, pw = user
    body = ["first body line", "second body line", "", "fourth (after an empty one)",
            ".dotted fifth", "sixth"]
    original = make_message(body_lines=body)
    header_block = original.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n"
    assert header_block.count(b"\r\n") == 6  # 5 header lines + the blank line
    assert server.deliver(addr, original) == {}
    with server.session(addr, pw) as p:
        full = p.retr(1)
        prefix = split_delivered(full, original)
        expected_headers = prefix + header_block

        top0 = p.top(1, 0)
        assert top0 == expected_headers

        top2 = p.top(1, 2)
        assert top2 == expected_headers + b"first body line\r\nsecond body line\r\n"

        top3 = p.top(1, 3)
        assert top3 == expected_headers + b"first body line\r\nsecond body line\r\n\r\n"

        top5 = p.top(1, 5)
        assert top5 == expected_headers + b"\r\n".join(x.encode() for x in body[:5]) + b"\r\n"

        assert p.top(1, 6) == full
        assert p.top(1, 1000) == full
        p.quit()


def test_top_on_message_without_body(server, user):
    addr, pw = user
    original = make_message(body_lines=[])
    assert original.endswith(b"\r\n\r\n")
    assert server.deliver(addr, original) == {}
    with server.session(addr, pw) as p:
        full = p.retr(1)
        assert full.endswith(original)
        assert p.top(1, 0) == full
        assert p.top(1, 3) == full
        p.quit()


def test_dot_stuffing(server, user):
    """#6: lines starting with '.' are stuffed on the wire (RETR and TOP) and the reply ends
    with CRLF.CRLF; the un-stuffed content equals the delivered message."""
    addr, pw = user
    body = [".", "..x", ".x", "...", "a line", "..", ". space", "last"]
    original = make_message(body_lines=body)
    assert server.deliver(addr, original) == {}
    with server.session(addr, pw) as p:
        first, wire = p.multi("RETR 1")
        assert first.startswith(b"+OK")
        assert wire.endswith(b"\r\n.\r\n")
        wire_body = wire.split(b"\r\n\r\n", 1)[1]
        assert wire_body == (b"..\r\n...x\r\n..x\r\n....\r\na line\r\n...\r\n.. space\r\n"
                             b"last\r\n.\r\n")
        # no unstuffed dot line anywhere before the terminator
        for ln in wire[:-3].split(b"\r\n"):
            assert ln != b".", "an unstuffed '.' line would end the reply early"
        content = p.retr(1)
        split_delivered(content, original)
        assert p.list()[1] == len(content)

        first, wire_top = p.multi("TOP 1 3")
        assert first.startswith(b"+OK")
        assert wire_top.split(b"\r\n\r\n", 1)[1] == b"..\r\n...x\r\n..x\r\n.\r\n"
        p.quit()


def test_message_that_is_only_dots(server, user):
    addr, pw = user
    original = b"Subject: dots\r\nX-Token: " + unique_token().encode() + b"\r\n\r\n.\r\n..\r\n"
    assert server.deliver(addr, original) == {}
    with server.session(addr, pw) as p:
        assert p.retr(1).endswith(original)
        p.quit()


def test_uidl_stable_across_sessions(server, user):
    """#7: UIDL across 3 sessions with deliveries and deletes between them."""
    addr, pw = user
    seen: dict[str, str] = {}  # uidl -> token

    def snapshot():
        with server.session(addr, pw) as p:
            uids = p.uidl()
            by_num = {}
            for n, u in uids.items():
                tok = token_of(p.top(n, 0))
                by_num[n] = (u, tok)
            p.quit()
        assert len({u for u, _ in by_num.values()}) == len(by_num), "duplicate UIDLs"
        for u, _ in by_num.values():
            assert len(u) == 36 and UUID_V1.match(u), u
            assert 1 <= len(u) <= 70 and all(0x21 <= ord(ch) <= 0x7E for ch in u)
        return by_num

    msgs = fill(server, addr, 3)
    s1 = snapshot()
    assert [t for _, t in s1.values()] == [token_of(m) for m in msgs]
    seen.update(s1.values())

    msgs += fill(server, addr, 2)
    s2 = snapshot()
    assert [s2[n] for n in (1, 2, 3)] == [s1[n] for n in (1, 2, 3)]
    for n in (4, 5):
        assert s2[n][0] not in seen
    seen.update(s2.values())

    # delete message 2 in a committed session, then deliver one more
    with server.session(addr, pw) as p:
        assert p.cmd("DELE 2").startswith(b"+OK")
        assert p.quit().startswith(b"+OK")
    msgs += fill(server, addr, 1)
    s3 = snapshot()
    survivors = [s2[n] for n in (1, 3, 4, 5)]
    assert [s3[n] for n in (1, 2, 3, 4)] == survivors
    assert s3[5][0] not in seen, "a new message reused a UIDL seen before"
    assert s3[5][1] == token_of(msgs[-1])
    # tokens and UIDLs keep their pairing
    for u, t in s3.values():
        if u in seen:
            assert seen[u] == t


def test_list_size_equals_retrieved_octets(server, user):
    """#8, with 8-bit content, long lines, dot lines and an empty body line."""
    addr, pw = user
    bodies = [
        ["plain"],
        [".", "..", "x" * 998, "", "ünïcödé bytes ✓"],
        ["line"] * 500,
    ]
    for b in bodies:
        m = make_message(body_lines=b)
        refused = server.deliver(addr, m)
        assert refused == {}
    with server.session(addr, pw) as p:
        listing = p.list()
        total = 0
        for n, size in listing.items():
            content = p.retr(n)
            assert len(content) == size, f"LIST {n} says {size}, RETR gave {len(content)}"
            total += size
        assert p.stat() == (3, total)
        p.quit()
    box = server.mailbox(addr)
    assert box["messages"] == 3 and box["octets"] == total


def test_password_with_spaces(server):
    """#9: PASS takes the rest of the line, spaces included."""
    pw = "pass word  with spaces"
    addr, _ = server.create_user(password=pw)
    with server.pop3() as p:
        assert p.cmd(f"USER {addr}").startswith(b"+OK")
        assert p.cmd(f"PASS {pw}").startswith(b"+OK")
        assert p.stat() == (0, 0)
        p.quit()
    with server.pop3() as p:
        p.cmd(f"USER {addr}")
        reply = p.cmd("PASS pass word with spaces")  # single spaces: wrong password
        assert reply.startswith(b"-ERR"), reply
    c = poplib_client(server)
    c.user(addr)
    assert c.pass_(pw).startswith(b"+OK")
    c.quit()


def test_mixed_case_commands(server, user):
    """#10"""
    addr, pw = user
    original = fill(server, addr, 2)[0]
    with server.pop3() as p:
        assert p.cmd(f"user {addr}").startswith(b"+OK")
        assert p.cmd(f"PaSs {pw}").startswith(b"+OK")
        assert re.fullmatch(rb"\+OK 2 \d+.*\r\n", p.cmd("stat"))
        first, body = p.multi("Retr 1")
        assert first.startswith(b"+OK")
        assert body.endswith(b"\r\n.\r\n")
        assert unstuff(body).endswith(original)
        first, body = p.multi("uidl")
        assert first.startswith(b"+OK") and len(body.split(b"\r\n")) == 4
        first, body = p.multi("tOp 1 0")
        assert first.startswith(b"+OK")
        assert p.cmd("dele 2").startswith(b"+OK")
        assert p.cmd("rSeT").startswith(b"+OK")
        assert p.cmd("nOoP").startswith(b"+OK")
        first, body = p.multi("capa")
        assert first.startswith(b"+OK")
        assert p.cmd("qUiT").startswith(b"+OK")
    assert server.mailbox(addr)["messages"] == 2

    with server.pop3() as p:
        first = p.cmd(f"auth plain {plain_b64(addr, pw)}")
        assert first.startswith(b"+OK"), first
        p.quit()
    with server.pop3() as p:
        assert p.cmd("AUTH Plain").startswith(b"+")
        assert p.cmd(plain_b64(addr, pw)).startswith(b"+OK")
        p.quit()


def test_quit_before_login(server):
    """#15"""
    with server.pop3() as p:
        assert p.greeting.startswith(b"+OK")
        reply = p.cmd("QUIT")
        assert reply.startswith(b"+OK"), reply
        assert p.is_closed_by_peer()
    with server.pop3() as p:
        p.cmd("USER nobody@example.com")
        assert p.cmd("QUIT").startswith(b"+OK")
        assert p.is_closed_by_peer()


def test_greeting_and_reply_format(server, user):
    addr, pw = user
    with server.pop3() as p:
        assert re.fullmatch(rb"\+OK[ -~]*\r\n", p.greeting), p.greeting
        assert len(p.greeting) <= 512
        p.login(addr, pw)
        reply = p.cmd("NOOP")
        assert re.fullmatch(rb"\+OK[ -~]*\r\n", reply)
        p.quit()


def test_capa(server, user):
    addr, pw = user
    with server.pop3() as p:
        first, body = p.multi("CAPA")
        assert first.startswith(b"+OK")
        caps = [ln for ln in body[:-3].split(b"\r\n") if ln]
        names = {ln.split()[0].upper() for ln in caps}
        for required in (b"TOP", b"UIDL", b"USER", b"SASL", b"RESP-CODES", b"AUTH-RESP-CODE",
                         b"PIPELINING", b"IMPLEMENTATION"):
            assert required in names, f"CAPA lacks {required!r}: {caps}"
        sasl = [ln for ln in caps if ln.upper().startswith(b"SASL")][0]
        assert b"PLAIN" in sasl.upper().split()
        p.login(addr, pw)
        first, body = p.multi("CAPA")
        assert first.startswith(b"+OK"), "CAPA must also work in TRANSACTION"
        names = {ln.split()[0].upper() for ln in body[:-3].split(b"\r\n") if ln}
        for required in (b"TOP", b"UIDL", b"PIPELINING"):
            assert required in names
        p.quit()


def test_bare_auth_lists_mechanisms(server):
    """#14: bare AUTH -> +OK, mechanism list, '.'"""
    with server.pop3() as p:
        first, body = p.multi("AUTH")
        assert first.startswith(b"+OK"), first
        mechs = [ln.strip().upper() for ln in body[:-3].split(b"\r\n") if ln]
        assert b"PLAIN" in mechs, body
        # the session is still in AUTHORIZATION and usable
        assert p.cmd("QUIT").startswith(b"+OK")


def test_auth_plain_initial_response(server, user):
    addr, pw = user
    fill(server, addr, 1)
    with server.pop3() as p:
        reply = p.cmd(f"AUTH PLAIN {plain_b64(addr, pw)}")
        assert reply.startswith(b"+OK"), reply
        assert p.stat()[0] == 1
        p.quit()
    # authzid equal to authcid is fine
    with server.pop3() as p:
        reply = p.cmd(f"AUTH PLAIN {plain_b64(addr, pw, authzid=addr)}")
        assert reply.startswith(b"+OK"), reply
        p.quit()


def test_auth_plain_continuation(server, user):
    addr, pw = user
    with server.pop3() as p:
        challenge = p.cmd("AUTH PLAIN")
        assert challenge.startswith(b"+ ") or challenge == b"+\r\n", challenge
        assert not challenge.startswith(b"+OK")
        reply = p.cmd(plain_b64(addr, pw))
        assert reply.startswith(b"+OK"), reply
        assert p.stat() == (0, 0)
        p.quit()


def test_auth_plain_continuation_long_credentials(server):
    """A 200-char password makes the base64 PLAIN response ~330 octets: an RFC 5034 client
    must then send it as a continuation line (not an initial response), and the server
    must accept that line (it is a SASL response, not a command)."""
    pw = "L" * 200
    addr, _ = server.create_user(password=pw)
    response = plain_b64(addr, pw)
    assert len(response) + 2 > 255
    with server.pop3() as p:
        challenge = p.cmd("AUTH PLAIN")
        assert challenge.startswith(b"+") and not challenge.startswith(b"+OK"), challenge
        reply = p.cmd(response)
        assert reply.startswith(b"+OK"), reply
        p.quit()


def test_auth_plain_cancel(server, user):
    addr, pw = user
    with server.pop3() as p:
        challenge = p.cmd("AUTH PLAIN")
        assert challenge.startswith(b"+") and not challenge.startswith(b"+OK"), challenge
        reply = p.cmd("*")
        assert reply.startswith(b"-ERR"), reply
        # still in AUTHORIZATION: a normal login works afterwards
        p.login(addr, pw)
        assert p.stat() == (0, 0)
        p.quit()


def test_auth_plain_wrong_password(server, user):
    addr, pw = user
    with server.pop3() as p:
        reply = p.cmd(f"AUTH PLAIN {plain_b64(addr, pw + 'x')}")
        assert reply.startswith(b"-ERR [AUTH]"), reply
        p.login(addr, pw)
        p.quit()


def test_auth_plain_foreign_authzid_rejected(server, user):
    """Not spelled out in the contract: PLAIN with an authzid naming another user must not
    log in as that user (RFC 4616; the checklist's 4616 row)."""
    addr, pw = user
    victim, _ = server.create_user(prefix="victim")
    with server.pop3() as p:
        reply = p.cmd(f"AUTH PLAIN {plain_b64(addr, pw, authzid=victim)}")
        assert reply.startswith(b"-ERR"), reply


def test_apop_rejected(server, user):
    addr, pw = user
    with server.pop3() as p:
        reply = p.cmd(f"APOP {addr} 0123456789abcdef0123456789abcdef")
        assert reply.startswith(b"-ERR"), reply
        # the session survives
        p.login(addr, pw)
        p.quit()


def test_commands_out_of_state(server, user):
    addr, pw = user
    with server.pop3() as p:
        for cmd in ("STAT", "LIST", "RETR 1", "DELE 1", "UIDL", "TOP 1 0", "RSET", "NOOP",
                    "PASS x"):
            reply = p.cmd(cmd)
            assert reply.startswith(b"-ERR"), f"{cmd} before login -> {reply!r}"
        p.login(addr, pw)
        for cmd in ("USER x@example.com", "PASS y", f"AUTH PLAIN {plain_b64(addr, pw)}"):
            reply = p.cmd(cmd)
            assert reply.startswith(b"-ERR"), f"{cmd} after login -> {reply!r}"
        assert p.stat() == (0, 0)
        p.quit()


def test_concurrent_sessions_snapshot(server, user):
    """Two sessions on one mailbox are both allowed. Each works on the snapshot it took at
    login: a message delivered later is not in an older session's STAT, and deletions
    committed by one session are seen by new sessions."""
    addr, pw = user
    msgs = fill(server, addr, 3)
    a = server.session(addr, pw)
    b = server.session(addr, pw)
    try:
        assert a.stat()[0] == 3
        assert b.stat()[0] == 3
        uids = a.uidl()
        assert b.uidl() == uids

        late = make_message(subject="late")
        assert server.deliver(addr, late) == {}
        assert a.stat()[0] == 3, "snapshot must not change after login"

        assert b.cmd("DELE 1").startswith(b"+OK")
        assert b.quit().startswith(b"+OK")

        # A's numbering is unchanged; message 2 is still readable
        assert a.stat()[0] == 3
        assert a.uidl() == uids
        assert a.retr(2).endswith(msgs[1])
        # message 1 is gone from the store: either still served from the snapshot or -ERR,
        # never wrong content
        first, body = a.multi("RETR 1")
        if first.startswith(b"+OK"):
                assert unstuff(body).endswith(msgs[0])
        else:
            assert first.startswith(b"-ERR")

        with server.session(addr, pw) as c:
            new_uids = c.uidl()
            assert uids[1] not in new_uids.values()
            assert len(new_uids) == 3  # 2 old + late
            c.quit()
        # A deletes message 3 and quits: committed; message 1 stays deleted
        assert a.cmd("DELE 3").startswith(b"+OK")
        assert a.cmd("QUIT").startswith(b"+")
    finally:
        a.close()
        b.close()
    with server.session(addr, pw) as c:
        left = c.uidl()
        assert sorted(left.values()) == sorted(
            set(new_uids.values()) - {uids[3]})
        c.quit()


def test_two_sessions_delete_same_message(server, user):
    """Both sessions DELE message 1 and QUIT: it is removed once, nothing else is lost, and
    the second QUIT still answers (+OK, or -ERR if it reports the message as gone)."""
    addr, pw = user
    msgs = fill(server, addr, 3)
    a = server.session(addr, pw)
    b = server.session(addr, pw)
    try:
        uids = a.uidl()
        assert a.cmd("DELE 1").startswith(b"+OK")
        assert b.cmd("DELE 1").startswith(b"+OK")
        assert a.cmd("QUIT").startswith(b"+OK")
        reply = b.cmd("QUIT")
        assert reply.startswith(b"+OK") or reply.startswith(b"-ERR"), reply
    finally:
        a.close()
        b.close()
    with server.session(addr, pw) as p:
        assert p.uidl() == {1: uids[2], 2: uids[3]}
        assert p.retr(1).endswith(msgs[1])
        p.quit()
    server.assert_serves()


def test_account_deleted_during_session(server):
    """The admin API deletes an account while a POP3 session on it is open: the session
    may fail its commands but the server survives, and a later login is refused."""
    addr, pw = server.create_user()
    fill(server, addr, 2)
    p = server.session(addr, pw)
    try:
        assert p.stat()[0] == 2
        status, _ = server.admin("DELETE", f"/users/{addr}")
        assert status == 204
        reply = p.cmd("DELE 2")
        assert reply[:3] in (b"+OK", b"-ER"), reply
        first, _ = p.multi("RETR 1")
        assert first[:3] in (b"+OK", b"-ER"), first
        p.cmd("QUIT")
    finally:
        p.close()
    with server.pop3() as q:
        q.ok(f"USER {addr}")
        assert q.cmd(f"PASS {pw}").startswith(b"-ERR [AUTH]")
    server.create_user(addr, "again-password")
    assert server.mailbox(addr)["messages"] == 0
    server.assert_serves()
