"""POP3 PIPELINING (RFC 2449): commands written in one go, byte by byte, or in random
chunks give identical, in-order replies; buffered input is never discarded."""

import random
import re
import threading
import time

import pytest

from conftest import LineSocket, Pop3Raw, make_message, unstuff


def run_script(server, script: bytes, chunks) -> bytes:
    """Connect, read the greeting, send `script` split at `chunks` (list of sizes, or
    None = one write), return everything the server sends until it closes."""
    s = LineSocket(server.pop3_port, timeout=30)
    try:
        greeting = s.readline()
        assert greeting.startswith(b"+OK")
        if chunks is None:
            s.send(script)
        else:
            pos = 0
            for size in chunks:
                s.send(script[pos:pos + size])
                pos += size
                if size == 1 and pos % 7 == 0:
                    time.sleep(0.001)  # let some bytes arrive as separate segments
            assert pos == len(script)
        return s.read_all()
    finally:
        s.close()


def random_chunks(total: int, rng: random.Random, max_size: int) -> list[int]:
    sizes = []
    while total > 0:
        n = min(total, rng.randint(1, max_size))
        sizes.append(n)
        total -= n
    return sizes


def parse_replies(data: bytes) -> list[bytes]:
    """Split the replies of USER/PASS/STAT/UIDL/RETR 1/QUIT."""
    replies = []
    pos = 0
    for multiline in (False, False, False, True, True, False):
        end = data.index(b"\r\n", pos) + 2
        first = data[pos:end]
        pos = end
        if multiline and first.startswith(b"+OK"):
            if data.startswith(b".\r\n", pos):
                end = pos + 3
            else:
                end = data.index(b"\r\n.\r\n", pos) + 5
            replies.append(first + data[pos:end])
            pos = end
        else:
            replies.append(first)
    assert pos == len(data), f"trailing bytes after QUIT reply: {data[pos:pos + 200]!r}"
    return replies


@pytest.fixture
def mailbox(server, user):
    addr, pw = user
    msgs = []
    for i in range(2):
        m = make_message(subject=f"pipelined {i}",
                         body_lines=[f"line {j}" for j in range(40)] + [".", "..dots"])
        assert server.deliver(addr, m) == {}
        msgs.append(m)
    script = (f"USER {addr}\r\nPASS {pw}\r\nSTAT\r\nUIDL\r\nRETR 1\r\nQUIT\r\n").encode()
    return addr, pw, msgs, script


def check_reference(data: bytes, msgs) -> list[bytes]:
    replies = parse_replies(data)
    user_r, pass_r, stat_r, uidl_r, retr_r, quit_r = replies
    assert user_r.startswith(b"+OK"), user_r
    assert pass_r.startswith(b"+OK"), pass_r
    assert re.match(rb"\+OK 2 \d+", stat_r), stat_r
    assert uidl_r.startswith(b"+OK") and len(uidl_r.split(b"\r\n")) == 5, uidl_r
    body = retr_r.split(b"\r\n", 1)[1]
    assert unstuff(body).endswith(msgs[0])
    assert quit_r.startswith(b"+OK")
    return replies


def test_pipelined_one_write(server, mailbox):
    addr, pw, msgs, script = mailbox
    data = run_script(server, script, None)
    check_reference(data, msgs)


def test_pipelined_byte_by_byte_identical(server, mailbox):
    addr, pw, msgs, script = mailbox
    reference = run_script(server, script, None)
    check_reference(reference, msgs)
    byte_by_byte = run_script(server, script, [1] * len(script))
    assert byte_by_byte == reference


@pytest.mark.parametrize("seed", range(6))
def test_pipelined_random_chunks_identical(server, mailbox, seed):
    addr, pw, msgs, script = mailbox
    reference = run_script(server, script, None)
    check_reference(reference, msgs)
    rng = random.Random(seed)
    max_size = [2, 3, 5, 11, 17, 64][seed]
    got = run_script(server, script, random_chunks(len(script), rng, max_size))
    assert got == reference


def test_pipelined_with_dele_and_rset(server, mailbox):
    """DELE/STAT/RSET/STAT in one write are processed in order; QUIT commits DELE 2."""
    addr, pw, msgs, _ = mailbox
    script = (f"USER {addr}\r\nPASS {pw}\r\nDELE 1\r\nDELE 2\r\nSTAT\r\nRSET\r\nSTAT\r\n"
              f"DELE 2\r\nLIST 2\r\nLIST 1\r\nQUIT\r\n").encode()
    data = run_script(server, script, None)
    lines = data.split(b"\r\n")
    assert lines[-1] == b""
    lines = lines[:-1]
    assert len(lines) == 11, data
    assert [ln[:3] for ln in lines] == [b"+OK", b"+OK", b"+OK", b"+OK", b"+OK", b"+OK", b"+OK",
                                        b"+OK", b"-ER", b"+OK", b"+OK"], data
    assert re.match(rb"\+OK 0 0\b", lines[4]), lines[4]
    assert re.match(rb"\+OK 2 \d+", lines[6]), lines[6]
    assert re.match(rb"\+OK 1 \d+", lines[9]), lines[9]
    with server.session(addr, pw) as p:
        assert p.stat()[0] == 1
        assert p.retr(1).endswith(msgs[0])
        p.quit()


def test_pipelined_large_replies_not_lost(server, user):
    """Many RETRs of a 200 KB message in one write, sent while the server's output is
    backed up: every reply arrives, in order, none dropped or interleaved."""
    addr, pw = user
    big = make_message(body_lines=[f"{i:06d} " + "y" * 70 for i in range(2700)])
    small = make_message(subject="small")
    assert server.deliver(addr, big) == {}
    assert server.deliver(addr, small) == {}
    rounds = 15
    cmds = [f"USER {addr}", f"PASS {pw}"]
    for _ in range(rounds):
        cmds += ["RETR 1", "NOOP", "RETR 2", "LIST 1"]
    cmds.append("QUIT")
    script = "".join(c + "\r\n" for c in cmds).encode()

    s = Pop3Raw(server.pop3_port, timeout=60, read_greeting=False)
    try:
        assert s.readline().startswith(b"+OK")
        sender = threading.Thread(target=s.send, args=(script,))
        sender.start()
        assert s.readline().startswith(b"+OK")
        assert s.readline().startswith(b"+OK")
        size1 = None
        for _ in range(rounds):
            first = s.readline()
            assert first.startswith(b"+OK"), first
            body = s.read_multiline()
            content = unstuff(body)
            assert content.endswith(big)
            assert s.readline().startswith(b"+OK")  # NOOP
            first = s.readline()
            assert first.startswith(b"+OK"), first
            assert unstuff(s.read_multiline()).endswith(small)
            list1 = s.readline()
            m = re.fullmatch(rb"\+OK 1 (\d+)\r\n", list1)
            assert m, list1
            size1 = int(m.group(1))
            assert size1 == len(content)
        assert s.readline().startswith(b"+OK")  # QUIT
        assert s.read_all() == b""
        sender.join()
    finally:
        s.close()


def test_pipelined_failed_pass_keeps_buffered_commands(server, user):
    """A failed PASS (with its delay) in the middle of a pipeline: the commands buffered
    behind it are still processed, in order, not discarded."""
    addr, pw = user
    script = (f"USER {addr}\r\nPASS wrong-password\r\nSTAT\r\nUSER {addr}\r\n"
              f"PASS {pw}\r\nSTAT\r\nQUIT\r\n").encode()
    data = run_script(server, script, None)
    lines = data.split(b"\r\n")[:-1]
    assert len(lines) == 7, data
    assert lines[0].startswith(b"+OK")
    assert lines[1].startswith(b"-ERR [AUTH]"), lines[1]
    assert lines[2].startswith(b"-ERR"), lines[2]
    assert lines[3].startswith(b"+OK") and lines[4].startswith(b"+OK"), data
    assert re.match(rb"\+OK 0 0\b", lines[5]), lines[5]
    assert lines[6].startswith(b"+OK")


def test_pipelined_auth_plain_continuation(server, user):
    """AUTH PLAIN, its continuation response and following commands in one write."""
    addr, pw = user
    from conftest import plain_b64
    m = make_message()
    assert server.deliver(addr, m) == {}
    script = (f"CAPA\r\nAUTH PLAIN\r\n{plain_b64(addr, pw)}\r\nSTAT\r\nLIST 1\r\n"
              f"QUIT\r\n").encode()
    for chunks in (None, [1] * len(script)):
        data = run_script(server, script, chunks)
        capa_end = data.index(b"\r\n.\r\n") + 5
        assert data.startswith(b"+OK")
        lines = data[capa_end:].split(b"\r\n")[:-1]
        assert len(lines) == 5, data
        assert lines[0].startswith(b"+") and not lines[0].startswith(b"+OK"), lines[0]
        assert lines[1].startswith(b"+OK"), lines[1]
        assert re.match(rb"\+OK 1 \d+", lines[2]), lines[2]
        assert re.match(rb"\+OK 1 \d+", lines[3]), lines[3]
        assert lines[4].startswith(b"+OK")
