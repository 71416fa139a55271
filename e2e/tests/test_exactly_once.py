"""Exactly-once delivery across MTA retries (docs/adr/0008-exactly-once-delivery.md).

An MTA whose connection dies after DATA but before it reads the 250 sends the message again.
pop3d recognises the retry (recipient + Message-ID + content digest, remembered
`dedup_window_secs`) and answers 250 with the first copy's id instead of storing a second one.
Run on both stores: the embedded run and the Cassandra run of the suite (POPFLEET_E2E_SERVER_ARGS).
"""

from __future__ import annotations

import re
import time

from conftest import LmtpRaw, make_message, unique_token
from test_admin_cli import parse_metrics

DELIVERED = re.compile(rb"^2\.0\.0 <[^>]+> Delivered as ([0-9a-f-]{36})$")
ALREADY = re.compile(rb"^2\.0\.0 <[^>]+> Already delivered as ([0-9a-f-]{36})$")


def data_replies(srv, rcpts: list[str], message: bytes) -> list[tuple[int, bytes]]:
    _, replies = srv.deliver_raw(rcpts, message)
    return [(code, lines[0]) for code, lines in replies]


def first_id(reply: tuple[int, bytes], pattern=DELIVERED) -> str:
    code, text = reply
    m = pattern.match(text)
    assert code == 250 and m, reply
    return m.group(1).decode()


def deliver_and_hang_up(srv, rcpt: str, message: bytes) -> None:
    """MAIL, RCPT, DATA and the whole message, then the connection closes without reading the
    reply to the final dot: the MTA's view of a connection cut right before the 250."""
    with LmtpRaw(srv.lmtp_port, host=srv.host) as c:
        assert c.lhlo()[0] == 250
        assert c.cmd("MAIL FROM:<mta@example.org>")[0] == 250
        assert c.cmd(f"RCPT TO:<{rcpt}>")[0] == 250
        assert c.cmd("DATA")[0] == 354
        c.send(c.data_bytes(message))
    # closed here, the 250 unread


def uidls(srv, addr: str, pw: str) -> list[str]:
    with srv.session(addr, pw) as p:
        ids = list(p.uidl().values())
        p.quit()
    return ids


def wait_for_messages(srv, addr: str, count: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while srv.mailbox(addr)["messages"] < count:
        assert time.monotonic() < deadline, f"{addr}: fewer than {count} messages after {timeout} s"
        time.sleep(0.1)


def duplicates_counted(srv) -> float:
    _, text = srv.admin("GET", "/metrics")
    return parse_metrics(text).get('pop3d_deliveries_total{result="duplicate"}', 0.0)


def test_retry_after_the_connection_was_cut_before_the_250_leaves_one_copy(server_factory):
    srv = server_factory(name="cut")
    addr, pw = srv.create_user(prefix="cut")
    msg = make_message()
    deliver_and_hang_up(srv, addr, msg)
    # The server committed what it read, though nobody was there for the 250.
    wait_for_messages(srv, addr, 1)
    [stored] = uidls(srv, addr, pw)

    [retry] = data_replies(srv, [addr], msg)
    assert first_id(retry, ALREADY) == stored, "the retry is answered with the first copy's id"
    assert uidls(srv, addr, pw) == [stored], "one copy, the first"
    assert duplicates_counted(srv) == 1


def test_a_retry_after_the_reader_deleted_the_first_copy_does_not_bring_it_back(server):
    addr, pw = server.create_user(prefix="readfirst")
    msg = make_message()
    stored = first_id(data_replies(server, [addr], msg)[0])
    with server.session(addr, pw) as p:
        p.ok("DELE 1")
        assert p.quit().startswith(b"+OK")
    assert first_id(data_replies(server, [addr], msg)[0], ALREADY) == stored
    assert server.mailbox(addr)["messages"] == 0


def test_same_message_id_with_other_content_is_a_different_message(server):
    addr, pw = server.create_user(prefix="sameid")
    token = unique_token()
    one = make_message(token=token, body_lines=["first body"])
    two = make_message(token=token, body_lines=["second body, same Message-ID"])
    a = first_id(data_replies(server, [addr], one)[0])
    b = first_id(data_replies(server, [addr], two)[0])
    assert a != b
    assert sorted(uidls(server, addr, pw)) == sorted([a, b])


def test_one_message_to_two_recipients_is_stored_for_each_and_a_retry_is_absorbed_for_each(server):
    alice, alice_pw = server.create_user(prefix="two-a")
    bob, bob_pw = server.create_user(prefix="two-b")
    msg = make_message()
    first = [first_id(r) for r in data_replies(server, [alice, bob], msg)]
    assert first[0] != first[1]
    again = [first_id(r, ALREADY) for r in data_replies(server, [alice, bob], msg)]
    assert again == first, "each recipient's retry names its own first copy"
    assert uidls(server, alice, alice_pw) == [first[0]]
    assert uidls(server, bob, bob_pw) == [first[1]]
    # Alone, to a third mailbox, the same message is a new delivery there.
    carol, carol_pw = server.create_user(prefix="two-c")
    [third] = data_replies(server, [carol], msg)
    assert uidls(server, carol, carol_pw) == [first_id(third)]


def test_a_message_without_message_id_is_never_deduplicated(server):
    addr, pw = server.create_user(prefix="noid")
    msg = b"From: <a@example.org>\r\nSubject: no id\r\n\r\nsame bytes twice\r\n"
    ids = [first_id(data_replies(server, [addr], msg)[0]) for _ in range(2)]
    assert ids[0] != ids[1]
    assert sorted(uidls(server, addr, pw)) == sorted(ids)


def test_a_window_of_zero_turns_deduplication_off(server_factory):
    srv = server_factory(name="nodedup", args=["--dedup-window-secs", "0"])
    addr, pw = srv.create_user(prefix="off")
    msg = make_message()
    ids = [first_id(data_replies(srv, [addr], msg)[0]) for _ in range(2)]
    assert ids[0] != ids[1]
    assert len(uidls(srv, addr, pw)) == 2
    assert duplicates_counted(srv) == 0


def test_a_delivery_is_forgotten_when_its_window_ends(server_factory):
    srv = server_factory(name="window", args=["--dedup-window-secs", "2"])
    addr, pw = srv.create_user(prefix="window")
    msg = make_message()
    first = first_id(data_replies(srv, [addr], msg)[0])
    assert first_id(data_replies(srv, [addr], msg)[0], ALREADY) == first
    time.sleep(3.2)
    later = first_id(data_replies(srv, [addr], msg)[0])
    assert later != first, "past the window the same message is a new delivery"
    assert sorted(uidls(srv, addr, pw)) == sorted([first, later])


def test_a_retry_of_the_message_that_filled_the_mailbox_is_not_refused_as_over_quota(server_factory):
    srv = server_factory(name="quota", args=["--mailbox-quota-mb", "1"])
    addr, pw = srv.create_user(prefix="quota")
    # ~700 KB: fits once; a second copy would not.
    msg = make_message(body_lines=[f"line {i:06d} " + "x" * 60 for i in range(10_000)])
    first = first_id(data_replies(srv, [addr], msg)[0])
    # Room at RCPT (the mailbox is under its quota), and the retry is recognised before the
    # quota is weighed: 250 with the first id, not a 552 that would make the MTA bounce it.
    assert first_id(data_replies(srv, [addr], msg)[0], ALREADY) == first
    assert uidls(srv, addr, pw) == [first]
