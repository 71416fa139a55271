"""The fleet on a real node (issue 15): kubelet + containerd + kube-proxy from `e2e/kube up --with-node`,
the operator installed with Helm as a pod of its own image, a two-DC Pop3Cluster on the netns-topology
Cassandra (n1 10.213.0.1 dc1, n2 10.213.0.2 dc2, reached from the pod network through the host), and
real clients through each datacenter's ClusterIP Service. Rollouts, a drain and a Cassandra node loss
run under the ledgered load of the fault tests: nothing acknowledged lost, nothing deleted back.

Run: e2e/run-e2e --node (e2e/test-all does, after the fault tests: it stops the loopback Cassandra
first, four JVMs and a node do not fit two cores). Needs root (namespaces, cgroups, iptables).
"""

from __future__ import annotations

import errno
import json
import os
import secrets
import subprocess
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path

import pytest

from conftest import make_message, token_of
from fleet import (KUBE, KUBECONFIG, NODE, REPO, TOLERATION, ServiceServer, apply, container_pid, ctr, helm,
                   is_ready, kjson, kube_bin, kubectl, pods, ready_endpoints, run, secret_value, tcp_open,
                   wait_until)
from test_faults_cassandra import cassandra, tokens_in
from test_faults_load import Load, Reader, all_tokens, ledger_check, make_users

pytestmark = pytest.mark.node

RUN = secrets.token_hex(3)
OP_NS, MAIL_NS, RELEASE, CLUSTER = f"pf-op-{RUN}", f"pf-mail-{RUN}", "popfleet", "fleet"
KEYSPACE = f"popfleet_fleet_{RUN}"
IMAGE, IMAGE_NEXT = "popfleet/pop3d:0.1.0", "popfleet/pop3d:0.1.0-rollout"
CASSANDRA = {"dc1": "10.213.0.1:9042", "dc2": "10.213.0.2:9042"}
SEL = f"popfleet.io/cluster={CLUSTER}"


def split(*args: str) -> str:
    return cassandra(*args, topology="netns")


def pop3cluster(image: str = IMAGE, config: dict | None = None) -> dict:
    dc = lambda name, n: {"name": name, "replicas": n, "tolerations": [TOLERATION]}
    return {
        "apiVersion": "popfleet.io/v1alpha1", "kind": "Pop3Cluster",
        "metadata": {"name": CLUSTER, "namespace": MAIL_NS},
        "spec": {
            "image": image, "imagePullPolicy": "IfNotPresent",
            "datacenters": [dc("dc1", 2), dc("dc2", 1)],
            "cassandra": {"contactPoints": {d: [a] for d, a in CASSANDRA.items()}, "keyspace": KEYSPACE,
                          "replication": {"dc1": 1, "dc2": 1}},
            # The test clients log in with USER/PASS over the pod network, without TLS.
            "auth": {"allowInsecureAuth": True},
            "deletionPolicy": "Delete",
            "config": config or {},
        },
    }


def cluster_settled(image: str) -> bool:
    """3/3 Available, every pop3d pod Ready on `image`, none terminating."""
    p3c = kjson("get", "p3c", "-n", MAIL_NS, CLUSTER)
    st = p3c.get("status", {})
    avail = any(c["type"] == "Available" and c["status"] == "True" for c in st.get("conditions", []))
    ps = pods(MAIL_NS, SEL)
    return (st.get("ready") == "3/3" and avail and len(ps) == 3 and all(is_ready(p) for p in ps)
            and all(p["spec"]["containers"][0]["image"] == image for p in ps))


def service(dc: str) -> ServiceServer:
    svc = kjson("get", "svc", "-n", MAIL_NS, f"{CLUSTER}-{dc}")
    admin = next(p["status"]["podIP"] for p in pods(MAIL_NS, f"{SEL},popfleet.io/datacenter={dc}") if is_ready(p))
    token = secret_value(MAIL_NS, f"{CLUSTER}-admin-token", "token")
    return ServiceServer(f"{CLUSTER}-{dc}", svc["spec"]["clusterIP"], admin, token)


@pytest.fixture(scope="module")
def node():
    if os.geteuid() != 0:
        pytest.fail("the real-node tests need root (network and mount namespaces, cgroups)", pytrace=False)
    split("up")
    run([str(KUBE), "up", "--with-node"], timeout=1800)
    yield
    kubectl("delete", "p3c", "-n", MAIL_NS, CLUSTER, "--ignore-not-found", "--wait=true", "--timeout=120s", check=False)
    helm("uninstall", RELEASE, "-n", OP_NS, "--wait", "--timeout", "120s", check=False)
    kubectl("delete", "ns", OP_NS, MAIL_NS, "--ignore-not-found", "--wait=false", check=False)
    kubectl("uncordon", NODE, check=False)


@pytest.fixture(scope="module")
def operator(node):
    for ns in (OP_NS, MAIL_NS):
        kubectl("create", "ns", ns)
    # --take-ownership: the CRD may be kept (resource-policy keep) from an earlier release.
    # --force-conflicts: Helm 4 applies server-side, and another manager may hold the CRD's fields.
    helm("install", RELEASE, str(REPO / "charts" / "popfleet"), "-n", OP_NS, "--take-ownership", "--force-conflicts",
         "--set", "image.repository=popfleet/operator", "--set", "image.tag=0.1.0",
         "--set", "image.pullPolicy=Never", "--set-json", f"tolerations=[{json.dumps(TOLERATION)}]",
         "--wait", "--timeout", "180s", timeout=240)
    return kjson("get", "deploy", "-n", OP_NS, RELEASE)


@pytest.fixture(scope="module")
def fleet(operator):
    apply(pop3cluster())
    wait_until(lambda: cluster_settled(IMAGE), 240, "the Pop3Cluster at 3/3, Available, every pod Ready")
    return {"dc1": service("dc1"), "dc2": service("dc2")}


def test_node_lists_the_images(node):
    names = {n for i in kjson("get", "node", NODE)["status"]["images"] for n in i.get("names") or []}
    assert {"docker.io/popfleet/pop3d:0.1.0", "docker.io/popfleet/operator:0.1.0"} <= names, names


def test_operator_runs_as_a_pod_with_the_charts_rbac(operator):
    assert operator["status"].get("availableReplicas") == 1, operator["status"]
    pod = next(p for p in pods(OP_NS, "app.kubernetes.io/name=popfleet") if is_ready(p))
    assert pod["spec"]["serviceAccountName"] == operator["spec"]["template"]["spec"]["serviceAccountName"]
    assert pod["status"]["containerStatuses"][0]["image"].endswith("popfleet/operator:0.1.0")
    # The token is the chart's ServiceAccount's, so what it may do is the chart's RBAC.
    sa = pod["spec"]["serviceAccountName"]
    assert kubectl("auth", "can-i", "create", "deployments", "-n", MAIL_NS,
                   f"--as=system:serviceaccount:{OP_NS}:{sa}").stdout.strip() == "yes"
    assert kubectl("auth", "can-i", "delete", "nodes", f"--as=system:serviceaccount:{OP_NS}:{sa}",
                   check=False).stdout.strip() == "no"
    logs = wait_until(lambda: (out := kubectl("logs", "-n", OP_NS, pod["metadata"]["name"]).stdout)
                      and "holding the lease" in out and out, 60, "the operator's log (kubectl logs)")
    assert "reconciling" in logs


def test_two_dc_cluster_passes_its_probes(fleet):
    out = kubectl("get", "p3c", "-n", MAIL_NS).stdout
    print(out)
    assert "3/3" in out and "True" in out
    for p in pods(MAIL_NS, SEL):
        c = p["spec"]["containers"][0]
        assert {"startupProbe", "readinessProbe", "livenessProbe"} <= c.keys()
        st = p["status"]["containerStatuses"][0]
        assert st["ready"] and st["started"] and st["restartCount"] == 0, st
        assert st["imageID"], st  # run by the runtime from the imported image
    for dc in ("dc1", "dc2"):
        want = {p["status"]["podIP"] for p in pods(MAIL_NS, f"{SEL},popfleet.io/datacenter={dc}")}
        assert ready_endpoints(MAIL_NS, f"{CLUSTER}-{dc}") == want


def test_port_forward_reaches_a_pod(fleet):
    pod = pods(MAIL_NS, f"{SEL},popfleet.io/datacenter=dc1")[0]["metadata"]["name"]
    pf = subprocess.Popen([kube_bin("kubectl"), f"--kubeconfig={KUBECONFIG}", "port-forward", "-n", MAIL_NS, f"pod/{pod}", "18090:9090"],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_until(lambda: tcp_open("127.0.0.1", 18090), 30, "kubectl port-forward listening")
        with urllib.request.urlopen("http://127.0.0.1:18090/readyz", timeout=10) as r:
            assert r.status == 200 and b"cassandra" in r.read()
    finally:
        pf.terminate()
        pf.wait(10)


def test_delivered_in_dc1_read_and_deleted_in_dc2(fleet):
    dc1, dc2 = fleet["dc1"], fleet["dc2"]
    addr, pw = dc1.create_user(prefix="node")
    msg = make_message()
    assert dc1.deliver(addr, msg) == {}
    token = token_of(msg)
    found = wait_until(lambda: tokens_in(dc2, addr, pw)[token] == 1, 60, "the mail in dc2 through its Service")
    assert found
    with dc2.session(addr, pw) as p:
        (n,) = p.list()
        assert token_of(p.retr(n)) == token
        p.ok(f"DELE {n}")
        assert p.quit().startswith(b"+OK")
    wait_until(lambda: not tokens_in(dc1, addr, pw), 60, "the mail gone in dc1")


def run_under_load(fleet, tmp_path: Path, seconds: float, action) -> dict:
    """`action()` while popfleet-load delivers through dc1's Service and readers read and delete
    through both Services (half the mailboxes each: two readers of one mailbox would trip over each
    other's deletions); then the ledger check. Returns its row with the failure counts."""
    dc1, dc2 = fleet["dc1"], fleet["dc2"]
    users = make_users(dc1, 8, f"load-{RUN}")
    # An MTA that retries (same bytes): a delivery cut by a killed pod is sent again, and the
    # ledger check below shows whether its first attempt had been stored (a duplicate) or not.
    load = Load(dc1, users, rate=20, seconds=seconds, tmp=tmp_path, retries=8)
    readers = [Reader(dc1, users[:4]), Reader(dc2, users[4:])]
    for r in readers:
        r.start()
    try:
        action()
    finally:
        report = load.wait()
        for r in readers:
            r.stop.set()
            r.join(30)
    time.sleep(3)  # replication between the DCs
    committed = set().union(*(r.committed for r in readers))
    maybe = set().union(*(r.maybe for r in readers))
    found = wait_until(lambda: all_tokens(dc1, users), 60, "every mailbox readable after the action")
    row = ledger_check("fleet", load.acked(), found, committed, maybe)
    sessions = sum((r.sessions for r in readers), Counter())
    errors = sum((r.errors for r in readers), Counter())
    row.update(load_errors=report.get("errors"), reconnects=report.get("reconnects"), delivered=report.get("delivered"),
               mta_retries=report.get("mta_retries"), retries_absorbed=report.get("retries_absorbed"),
               sessions=dict(sessions), session_errors=dict(errors))
    print(f"\nFLEET {row}")
    assert row["acknowledged"] > 0 and sessions["committed"] > 0
    return row


def test_rolling_update_under_load_loses_nothing(fleet, tmp_path):
    ctr("images", "tag", "--force", f"docker.io/{IMAGE}", f"docker.io/{IMAGE_NEXT}")

    def roll():
        time.sleep(5)
        apply(pop3cluster(image=IMAGE_NEXT))
        wait_until(lambda: cluster_settled(IMAGE_NEXT), 240, "the rollout to the new tag")
        apply(pop3cluster(image=IMAGE_NEXT, config={"idle_timeout": "301"}))
        wait_until(lambda: kjson("get", "deploy", "-n", MAIL_NS, f"{CLUSTER}-dc1")["status"].get("updatedReplicas") == 2
                   and cluster_settled(IMAGE_NEXT), 240, "the rollout of the config change")
        time.sleep(3)

    row = run_under_load(fleet, tmp_path, 75, roll)
    print(f"ROLLOUT failed LMTP transactions: {row['load_errors']}; POP3 sessions: {row['sessions']}")
    # Two rollouts of every pod, and not one transaction refused or session cut: the preStop pause
    # keeps new connections coming until kube-proxy has let go, SIGTERM lets the open ones finish.
    # (The load's reconnects are pooled connections closed between transactions, as drained.)
    assert not row["load_errors"] and row["mta_retries"] == 0, row
    assert row["sessions"].get("failed", 0) == 0, row["session_errors"]
    fleet.update(dc1=service("dc1"), dc2=service("dc2"))


def test_drain_honours_the_pdb_and_a_forced_delete_is_replaced(fleet, tmp_path):
    low = {"dc1": 2}

    def watch(stop: threading.Event):
        while not stop.wait(0.5):
            low["dc1"] = min(low["dc1"], len(ready_endpoints(MAIL_NS, f"{CLUSTER}-dc1")))

    def drain_and_force():
        stop = threading.Event()
        t = threading.Thread(target=watch, args=(stop,), daemon=True)
        t.start()
        r = kubectl("drain", NODE, "--ignore-daemonsets", "--delete-emptydir-data", "--timeout=40s", check=False,
                    timeout=120)
        stop.set()
        t.join()
        kubectl("uncordon", NODE)
        # One node: the evicted pods' replacements wait for the uncordon; the PDB stops the second dc1 pod.
        assert r.returncode != 0 and "disruption budget" in r.stderr, r.stderr[-2000:]
        wait_until(lambda: cluster_settled(IMAGE_NEXT), 240, "the fleet back after the drain")
        victim = pods(MAIL_NS, f"{SEL},popfleet.io/datacenter=dc1")[0]["metadata"]["name"]
        kubectl("delete", "pod", "-n", MAIL_NS, victim, "--force", "--grace-period=0")
        wait_until(lambda: cluster_settled(IMAGE_NEXT) and victim not in
                   {p["metadata"]["name"] for p in pods(MAIL_NS, SEL)}, 240, "the force-deleted pod replaced")

    row = run_under_load(fleet, tmp_path, 60, drain_and_force)
    assert low["dc1"] >= 1, "dc1's Service lost every ready endpoint during the drain"
    print(f"DRAIN dc1 ready endpoints never below {low['dc1']}; LMTP failed: {row['load_errors']}; "
          f"MTA retries {row['mta_retries']} (absorbed as already stored: {row['retries_absorbed']}); "
          f"POP3: {row['sessions']}")
    fleet.update(dc1=service("dc1"), dc2=service("dc2"))


def test_one_dc_cassandra_down_takes_that_dc_out_and_back(fleet):
    dc1, dc2 = fleet["dc1"], fleet["dc2"]
    addr, pw = dc1.create_user(prefix="dcdown")
    split("stop", "n2")
    try:
        wait_until(lambda: not ready_endpoints(MAIL_NS, f"{CLUSTER}-dc2")
                   and not any(is_ready(p) for p in pods(MAIL_NS, f"{SEL},popfleet.io/datacenter=dc2")),
                   120, "dc2's pods NotReady and out of its Service")
        assert len(ready_endpoints(MAIL_NS, f"{CLUSTER}-dc1")) == 2
        msg = make_message()
        assert dc1.deliver(addr, msg) == {}  # dc1 serves on
        assert tokens_in(dc1, addr, pw)[token_of(msg)] == 1
    finally:
        split("up")
    wait_until(lambda: cluster_settled(IMAGE_NEXT), 240, "dc2 Ready again once its Cassandra node is back")
    dc2 = fleet["dc2"] = service("dc2")
    wait_until(lambda: tokens_in(dc2, addr, pw)[token_of(msg)] == 1, 120,
               "the mail delivered during the outage readable in dc2 (hints)")


def test_security_context_is_enforced_by_the_runtime(fleet):
    for p in pods(MAIL_NS, SEL):
        pid = container_pid(p)
        status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
        assert status["Uid"].split() == ["65532"] * 4 and status["Gid"].split() == ["65532"] * 4, status["Uid"]
        assert int(status["CapEff"], 16) == 0 and int(status["CapPrm"], 16) == 0, status["CapEff"]
        assert status["NoNewPrivs"].strip() == "1" and status["Seccomp"].strip() == "2"
        assert Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].endswith(b"pop3d")
        # The container's root as it sees it: even root on the host cannot write through a read-only mount.
        with pytest.raises(OSError) as e:
            Path(f"/proc/{pid}/root/popfleet-write-probe").write_text("x")
        assert e.value.errno == errno.EROFS, e.value
