"""SIGTERM is a drain, not a cut (issue 15: rollouts and drains with nothing lost). Once shutdown
begins, pop3d accepts no new connection and its ops /readyz answers 503 "draining", while sessions
already open finish what their client is doing: a POP3 client's STAT/DELE/QUIT, an LMTP client's
transaction (then 421 at that boundary, before a next one). A client that stays quiet gets the shutdown reply instead of a silent cut. The
process exits 0 once its sessions are done."""

from __future__ import annotations

import json
import signal
import time
import urllib.error
import urllib.request

from conftest import LmtpRaw, free_port, make_message, token_of


def readyz(port: int) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_sigterm_drains_open_sessions_and_refuses_new_ones(server_factory):
    ops = free_port()
    srv = server_factory(name="drain", args=["--ops", f"127.0.0.1:{ops}"])
    addr, pw = srv.create_user()
    first = make_message()
    assert srv.deliver(addr, first) == {}
    assert readyz(ops)[0] == 200

    pop = srv.session(addr, pw)        # logged in before the signal
    quiet = srv.pop3()                 # connected (greeting read), then says nothing
    lmtp = LmtpRaw(srv.lmtp_port)
    assert lmtp.lhlo()[0] == 250
    srv.proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)

    # What the clients had started, they finish.
    assert pop.stat()[0] == 1
    assert pop.cmd("DELE 1").startswith(b"+OK")
    assert pop.quit().startswith(b"+OK")
    second = make_message()
    assert lmtp.cmd("MAIL FROM:<s@example.org>")[0] == 250
    assert lmtp.cmd(f"RCPT TO:<{addr}>")[0] == 250
    assert lmtp.cmd("DATA")[0] == 354
    lmtp.send(lmtp.data_bytes(second))
    assert lmtp.read_reply()[0] == 250
    # That transaction was its last: the connection closes at the boundary (an MTA sends its next
    # message on a new connection, to a server that stays).
    assert lmtp.read_reply()[0] == 421
    assert lmtp.is_closed_by_peer()

    # Nothing new comes in, the probe says why, and the quiet client is told.
    status, body = readyz(ops)
    assert status == 503 and "draining" in json.dumps(body), (status, body)
    try:
        srv.pop3(timeout=2).close()
        raise AssertionError("a new POP3 connection was accepted during the drain")
    except OSError:
        pass
    quiet.settimeout(10)
    assert quiet.readline().startswith(b"-ERR [SYS/TEMP]")
    assert srv.proc.wait(15) == 0

    srv.start()
    with srv.session(addr, pw) as p:
        (n,) = p.list()
        assert token_of(p.retr(n)) == token_of(second)  # the DELE committed, the delivery stored
        p.quit()

