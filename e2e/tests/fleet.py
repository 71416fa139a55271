"""Helpers for the real-node fleet tests (test_fleet_node.py): kubectl and helm against the test
control plane, the node's containerd, and a pop3d Service seen as a `conftest.Server` so the
ledgered load and readers of the fault tests drive it unchanged."""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import time
from pathlib import Path

import pytest

from conftest import Server

REPO = Path(__file__).resolve().parents[2]
KUBE = REPO / "e2e" / "kube"
NODE_SH = REPO / "e2e" / "kube.d" / "node.sh"
STATE = Path(os.environ.get("POPFLEET_STATE", Path.home() / ".local" / "state" / "popfleet"))
KUBECONFIG = STATE / "kube" / "kubeconfig"
CACHE = Path(os.environ.get("POPFLEET_CACHE", Path.home() / ".cache" / "popfleet"))
NODE = "popfleet-node"
TAINT = "popfleet.dev/e2e-node"
TOLERATION = {"key": TAINT, "operator": "Exists", "effect": "NoSchedule"}


def kube_bin(name: str) -> str:
    version = os.environ.get("POPFLEET_KUBE_VERSION", "1.36.3").lstrip("v")
    return str(CACHE / f"kube-{version}" / "bin" / name)


def run(cmd: list[str], check: bool = True, timeout: float = 300, input: str | None = None,
        env: dict | None = None) -> subprocess.CompletedProcess:
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, input=input,
                       env=dict(os.environ, KUBECONFIG=str(KUBECONFIG), **(env or {})))
    if check and r.returncode != 0:
        pytest.fail(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}", pytrace=False)
    return r


def kubectl(*args: str, **kw) -> subprocess.CompletedProcess:
    return run([kube_bin("kubectl"), *args], **kw)


def kjson(*args: str) -> dict:
    return json.loads(kubectl(*args, "-o", "json").stdout)


def helm(*args: str, **kw) -> subprocess.CompletedProcess:
    return run([kube_bin("helm"), *args], **kw)


def ctr(*args: str) -> str:
    return run([str(NODE_SH), "ctr", *args]).stdout


def apply(obj: dict, namespace: str | None = None) -> None:
    ns = ["-n", namespace] if namespace else []
    kubectl("apply", *ns, "-f", "-", input=json.dumps(obj))


def wait_until(check, timeout: float, what: str, interval: float = 1.0):
    """Polls `check` until it returns something truthy; fails with the last value or error."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except (AssertionError, OSError, KeyError, IndexError, subprocess.SubprocessError) as e:
            last = e
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}; last: {last!r}", pytrace=False)


def pods(namespace: str, selector: str) -> list[dict]:
    return kjson("get", "pods", "-n", namespace, "-l", selector)["items"]


def is_ready(pod: dict) -> bool:
    conds = pod.get("status", {}).get("conditions", [])
    return pod["metadata"].get("deletionTimestamp") is None and any(
        c["type"] == "Ready" and c["status"] == "True" for c in conds)


def ready_endpoints(namespace: str, service: str) -> set[str]:
    """Addresses the Service's EndpointSlices mark ready: what kube-proxy sends traffic to."""
    slices = kjson("get", "endpointslices", "-n", namespace, "-l", f"kubernetes.io/service-name={service}")
    return {a for s in slices["items"] for e in s.get("endpoints") or []
            if (e.get("conditions") or {}).get("ready") for a in e["addresses"]}


def secret_value(namespace: str, name: str, key: str) -> str:
    data = kjson("get", "secret", "-n", namespace, name)["data"]
    return base64.b64decode(data[key]).decode()


def container_pid(pod: dict, container: str = "pop3d") -> int:
    """The host PID of a pod's container, from the node's containerd."""
    cid = next(s["containerID"] for s in pod["status"]["containerStatuses"] if s["name"] == container)
    cid = cid.split("://", 1)[1]
    for line in ctr("tasks", "ls").splitlines()[1:]:
        fields = line.split()
        if fields and fields[0] == cid:
            return int(fields[1])
    raise AssertionError(f"no containerd task for {cid}")


class ServiceServer(Server):
    """A pop3d Service (ClusterIP through kube-proxy) with the `conftest.Server` client methods;
    the admin API goes to one pod of it, with the cluster's admin token."""

    def __init__(self, name: str, cluster_ip: str, admin_ip: str, token: str):
        self.name, self.host = name, cluster_ip
        self.pop3_port, self.lmtp_port, self.admin_port = 110, 24, 8080
        self.admin_host, self.admin_token = admin_ip, token
        self.proc = None

    @property
    def admin_url(self) -> str:
        return f"http://{self.admin_host}:{self.admin_port}"


def tcp_open(host: str, port: int, timeout: float = 3.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False
