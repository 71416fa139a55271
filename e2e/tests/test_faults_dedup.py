"""The fault ledger of exactly-once delivery (ADR 8): under a steady LMTP load, a proxy between
the MTA (popfleet-load with --retries, the same bytes each try) and pop3d cuts connections right
after the end of a message's data, so pop3d stores it and its 250 goes nowhere, as in a network
cut or a client-side crash. The MTA sends each such message again. The ledger then counts the
mail found per acknowledged delivery: with deduplication 0 duplicates and every cut absorbed; with
it turned off (the control, embedded only) the same cuts make duplicates, so the check can fail.
"""

from __future__ import annotations

import random
import re
import socket
import threading

import pytest

from conftest import HOST, free_port, make_message
from test_exactly_once import ALREADY, data_replies, first_id, uidls
from test_faults_cassandra import eventually, store_args
from test_faults_load import Load, all_tokens, ledger_check, make_users, phase

pytestmark = pytest.mark.faults

END_OF_DATA = b"\r\n.\r\n"


class CuttingProxy:
    """TCP proxy to pop3d's LMTP port. When a client chunk ends a message's data, it decides with
    probability `cut` to lose the reply: the data goes on to pop3d, pop3d's answer is read and
    dropped, and only then are both sides closed. So a cut message is always stored before its
    retry arrives, and its client never sees a reply, however slowly this proxy's threads run (the
    decision is taken before the data is forwarded, so no reply can slip through first)."""

    REPLY_WAIT = 60.0  # seconds to wait for pop3d's dropped reply before closing anyway

    def __init__(self, upstream: tuple[str, int], cut: float):
        self.upstream, self.cut = upstream, cut
        self.host, self.lmtp_port = HOST, free_port()
        self.cuts = 0
        self.cut_tokens: set[str] = set()  # the messages whose reply was cut, each counted once
        self.rng = random.Random(11)
        self.lock = threading.Lock()
        self.listener = socket.create_server((self.host, self.lmtp_port))
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.upstream)
            muted = threading.Event()  # set once the reply now due from pop3d is to be lost
            threading.Thread(target=self._replies, args=(server, client, muted), daemon=True).start()
            threading.Thread(target=self._requests, args=(client, server, muted), daemon=True).start()

    def _should_cut(self, message: bytes) -> bool:
        with self.lock:
            if self.rng.random() >= self.cut:
                return False
            self.cuts += 1
            token = re.search(rb"\r\nX-Load-Token: (\S+)\r\n", message)
            assert token, "the load's messages carry X-Load-Token"
            self.cut_tokens.add(token.group(1).decode())
            return True

    def _requests(self, client: socket.socket, server: socket.socket, muted: threading.Event):
        message = b""  # client bytes since the last end of data
        try:
            while data := client.recv(65536):
                message += data
                if message.endswith(END_OF_DATA):
                    if self._should_cut(message):
                        muted.set()
                        server.sendall(data)
                        # The reply pump reads pop3d's answer, drops it and closes both sides;
                        # the timer only matters if pop3d never answers.
                        threading.Timer(self.REPLY_WAIT, _close, (client, server)).start()
                        return
                    message = b""
                server.sendall(data)
        except OSError:
            pass
        _close(client, server)

    def _replies(self, server: socket.socket, client: socket.socket, muted: threading.Event):
        try:
            while data := server.recv(65536):
                if muted.is_set():
                    break  # the reply to the cut message's data: pop3d has answered, the client never hears
                client.sendall(data)
        except OSError:
            pass
        _close(client, server)

    def close(self):
        self.listener.close()


def _close(*socks: socket.socket):
    for s in socks:
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        s.close()


@pytest.mark.parametrize("store,dedup", [("embedded", True), ("cassandra", True), ("embedded", False)],
                         ids=["embedded", "cassandra", "embedded-dedup-off-control"])
def test_replies_lost_after_the_commit_are_retried_and_stored_once(server_factory, tmp_path, store, dedup):
    srv = server_factory(name="cut-replies", store_args=[] if store == "embedded" else store_args("dc1"),
                         args=[] if dedup else ["--dedup-window-secs", "0"])
    users = make_users(srv, 8, "cutreply")
    proxy = CuttingProxy((srv.host, srv.lmtp_port), cut=0.2)
    try:
        load = Load(proxy, users, rate=30, seconds=phase(12 if dedup else 6), tmp=tmp_path, retries=8)
        report = load.wait()
    finally:
        proxy.close()
    acked, found = load.acked(), all_tokens(srv, users)
    cut = len(proxy.cut_tokens)
    print(f"\nCUT {proxy.cuts} replies after the data ({cut} messages); MTA retries {report['mta_retries']}, "
          f"absorbed as already stored {report['retries_absorbed']}; load errors {report['errors']}")
    assert cut > 0 and report["mta_retries"] == proxy.cuts, "each cut reply is followed by one retry"
    assert not report["errors"], "a delivery failed on every try"
    if dedup:
        ledger_check(f"replies cut after the commit ({store})", acked, found, set(), set())
        # A cut message was stored by its first attempt, so exactly one later try of it is answered
        # "already delivered" (a try cut again is tried once more).
        assert report["retries_absorbed"] == cut, report
    else:
        dup = {token for (_, token), n in found.items() if n > 1}
        print(f"control, deduplication off: {len(dup)} messages stored more than once")
        assert dup == proxy.cut_tokens, "without deduplication each cut message is stored again"
        assert report["retries_absorbed"] == 0


def test_a_retry_that_fails_over_to_the_other_datacenter_is_recognised_there(server_factory):
    """The MTA lost dc1's 250 and sends the message to dc2 (its next MX): the record was
    replicated with the listing row, so dc2 answers with the id of dc1's copy."""
    dc1 = server_factory(name="dc1", store_args=store_args("dc1"))
    dc2 = server_factory(name="dc2", store_args=store_args("dc2"))
    addr, pw = dc1.create_user(prefix="failover")
    msg = make_message()
    first = first_id(data_replies(dc1, [addr], msg)[0])
    eventually(lambda: uidls(dc2, addr, pw) == [first], 30, "dc1's delivery replicated to dc2")
    assert first_id(data_replies(dc2, [addr], msg)[0], ALREADY) == first
    assert uidls(dc2, addr, pw) == [first] and uidls(dc1, addr, pw) == [first]
