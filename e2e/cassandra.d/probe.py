#!/usr/bin/env python3
"""CQL health probe for the e2e Cassandra nodes (run with the venv's python by e2e/cassandra).

usage: probe.py IP=DC [IP=DC ...]

For each node, connects to that node only and prints one line:
    127.0.0.1 cql=up dc=dc1 peers=127.0.0.2/dc2 schema=agree
    127.0.0.2 cql=down error=...
Exit status 0 only when every node answers CQL, reports the expected DC, lists every other
node with its expected DC in system.peers_v2, and all nodes it knows agree on the schema
(so tests may run DDL right away).
"""

import logging
import sys
import warnings

warnings.filterwarnings("ignore")  # asyncore deprecation etc. would clutter the status lines

from cassandra.cluster import Cluster  # noqa: E402
from cassandra.policies import WhiteListRoundRobinPolicy  # noqa: E402

logging.basicConfig(level=logging.CRITICAL)  # the driver logs every refused connection otherwise


def probe(ip, expected):
    """Return (ok, line) for one node; `expected` maps every node's IP to its DC."""
    cluster = Cluster(
        contact_points=[ip],
        port=9042,
        protocol_version=5,
        # Talk to this node only: the driver would otherwise also open pools to the peers it finds.
        load_balancing_policy=WhiteListRoundRobinPolicy([ip]),
        connect_timeout=3,
        control_connection_timeout=3,
        schema_metadata_enabled=False,
        token_metadata_enabled=False,
    )
    try:
        session = cluster.connect()
        session.default_timeout = 5
        local = session.execute("SELECT data_center, schema_version FROM system.local").one()
        peers = list(session.execute("SELECT peer, data_center, schema_version FROM system.peers_v2"))
    except Exception as e:  # any failure just means "not ready (yet)"
        msg = " ".join(str(e).split())[:200]
        return False, f"{ip} cql=down error={type(e).__name__}:{msg}"
    finally:
        cluster.shutdown()

    seen = {str(p.peer): p.data_center for p in peers}
    versions = {local.schema_version} | {p.schema_version for p in peers}
    ok = local.data_center == expected[ip]
    for other, dc in expected.items():
        if other != ip and seen.get(other) != dc:
            ok = False
    agree = len(versions) == 1 and None not in versions
    ok = ok and agree
    peer_txt = ",".join(f"{p}/{d}" for p, d in sorted(seen.items())) or "none"
    return ok, (
        f"{ip} cql=up dc={local.data_center} peers={peer_txt} "
        f"schema={'agree' if agree else 'disagree'}"
    )


def main(argv):
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    expected = dict(a.split("=", 1) for a in argv)
    all_ok = True
    for ip in expected:
        ok, line = probe(ip, expected)
        all_ok = all_ok and ok
        print(line, flush=True)
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
