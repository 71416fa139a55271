"""pop3d talks TLS to Cassandra: two real pop3d processes, one per datacenter, each on TLS with a
client certificate (the test cluster requires one of TLS clients), one checking the nodes against a
fixed DNS name and one against their addresses. Mail delivered in dc1 is read and deleted in dc2.
A certificate the client cannot trust stops start-up with a clear error, not a half-working server.

Runs with the fault tests (`e2e/run-e2e --faults`): it needs the cluster's own addresses."""

import os
from collections import Counter
from pathlib import Path

import pytest

from conftest import make_message, token_of
from test_faults_cassandra import eventually, serve_once, store_args, tokens_in

pytestmark = pytest.mark.faults

# Where e2e/cassandra writes them: $POPFLEET_STATE/cassandra-tls.
TLS_DIR = Path(os.environ.get("POPFLEET_CASSANDRA_TLS_DIR")
               or Path(os.environ.get("POPFLEET_STATE", Path.home() / ".local/state/popfleet")) / "cassandra-tls")


def tls_args(ca: str = "ca.crt", server_name: str | None = None) -> list[str]:
    args = ["--cassandra-tls-ca", str(TLS_DIR / ca),
            "--cassandra-tls-cert", str(TLS_DIR / "client.crt"),
            "--cassandra-tls-key", str(TLS_DIR / "client.key")]
    if server_name:
        args += ["--cassandra-tls-server-name", server_name]
    return args


def test_pop3d_on_tls_delivers_in_dc1_and_serves_in_dc2(server_factory):
    dc1 = server_factory(name="dc1", store_args=store_args("dc1") + tls_args(server_name="cassandra.popfleet.test"))
    dc2 = server_factory(name="dc2", store_args=store_args("dc2") + tls_args())
    addr, pw = dc1.create_user(prefix="tls")
    msgs = [make_message(subject=f"tls {i}") for i in range(3)]
    for m in msgs:
        assert dc1.deliver(addr, m) == {}
    eventually(lambda: tokens_in(dc2, addr, pw) == Counter(token_of(m) for m in msgs), 60,
               "dc2 lists the three messages")
    with dc2.session(addr, pw) as p:
        assert len(p.retr(1)) == p.list()[1]
        p.ok("DELE 1")
        assert p.quit().startswith(b"+OK")
    eventually(lambda: len(tokens_in(dc1, addr, pw)) == 2, 60, "dc1 sees the deletion")


def test_an_untrusted_cluster_certificate_stops_start_up(tmp_path):
    r = serve_once(tmp_path, *store_args("dc1"), *tls_args(ca="other-ca.crt"))
    assert r.returncode != 0
    assert "cannot connect to Cassandra" in r.stderr and "UnknownIssuer" in r.stderr, r.stderr[-2000:]

    r = serve_once(tmp_path, *store_args("dc1"), *tls_args(server_name="not-the-cluster.example"))
    assert r.returncode != 0
    assert "not valid for name" in r.stderr, r.stderr[-2000:]

    missing = tmp_path / "no-such-ca.pem"
    r = serve_once(tmp_path, *store_args("dc1"), "--cassandra-tls-ca", str(missing))
    assert r.returncode != 0
    assert str(missing) in r.stderr, r.stderr[-2000:]
