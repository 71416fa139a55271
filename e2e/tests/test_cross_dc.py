"""Two real pop3d processes, one per datacenter, on the two-DC Cassandra: mail delivered in dc1
is listed, retrieved and deleted in dc2, and the deletion is then seen from dc1.

Runs with the fault tests (`e2e/run-e2e --faults`): it needs the cluster's own addresses."""

from collections import Counter

import pytest

from conftest import make_message, token_of
from test_faults_cassandra import eventually, store_args, tokens_in

pytestmark = pytest.mark.faults


def test_deliver_in_dc1_retrieve_and_delete_in_dc2_seen_from_dc1(server_factory):
    dc1 = server_factory(name="dc1", store_args=store_args("dc1"))
    dc2 = server_factory(name="dc2", store_args=store_args("dc2"))
    addr, pw = dc1.create_user(prefix="xdc")
    msgs = [make_message(subject=f"cross-dc {i}") for i in range(5)]
    for m in msgs:
        assert dc1.deliver(addr, m) == {}
    want = Counter(token_of(m) for m in msgs)

    # Replication to dc2 is asynchronous: wait for the account and all five messages there.
    eventually(lambda: tokens_in(dc2, addr, pw) == want, 60, "dc2 lists the five messages")
    with dc2.session(addr, pw) as p:
        by_token = {token_of(m): m for m in msgs}
        uidls = p.uidl()
        for n, size in p.list().items():
            content = p.retr(n)
            assert len(content) == size
            assert content.endswith(by_token[token_of(content)])
        for n in (1, 2, 3):
            p.ok(f"DELE {n}")
        assert p.quit().startswith(b"+OK")
    deleted = {uidls[n] for n in (1, 2, 3)}

    def dc1_sees_deletion():
        with dc1.session(addr, pw) as p:
            left = set(p.uidl().values())
            p.quit()
        assert len(left) == 2 and not (left & deleted), left
        return True

    eventually(dc1_sees_deletion, 60, "dc1 sees the deletion made in dc2")
    assert dc1.mailbox(addr)["messages"] == 2


def test_account_deleted_in_dc2_stops_deliveries_in_dc1_and_leaves_nothing_for_a_new_owner(server_factory):
    """LMTP remembers a recipient that is an account for --account-cache-secs; an account deleted
    through another server (here: in the other DC) is refused once that and replication have passed,
    and mail accepted in the window never reaches whoever gets the address next."""
    dc1 = server_factory(name="dc1", store_args=store_args("dc1") + ["--account-cache-secs", "2"])
    dc2 = server_factory(name="dc2", store_args=store_args("dc2"))
    addr, _ = dc1.create_user(prefix="cached")
    assert dc1.deliver(addr, make_message(subject="before")) == {}  # dc1 now remembers the account
    eventually(lambda: dc2.admin("GET", f"/users/{addr}/mailbox")[0] == 200, 60, "the account reaches dc2")
    assert dc2.admin("DELETE", f"/users/{addr}")[0] == 204

    accepted_in_window = []

    def refused_in_dc1():
        rcpt, data = dc1.deliver_raw([addr], make_message(subject="after delete"))
        if rcpt[0][0] == 250:
            accepted_in_window.append(data)
        return rcpt[0][0] == 550

    eventually(refused_in_dc1, 60, "dc1 refuses the deleted account", interval=0.5)
    print(f"deliveries accepted after the deletion, before dc1 refused: {len(accepted_in_window)}")
    # Whatever the window let in, the next owner of the address starts with an empty mailbox.
    addr2, pw2 = dc1.create_user(addr, "new-owner")
    assert dc1.mailbox(addr2)["messages"] == 0
    with dc1.session(addr2, pw2) as p:
        assert p.stat()[0] == 0
        p.quit()
