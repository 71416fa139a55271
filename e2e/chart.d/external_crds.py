"""The upstream CRDs e2e/chart-test installs into the test control plane so that the chart's optional objects
(ServiceMonitor, PodMonitor, PrometheusRule) and the TLS example (cert-manager Certificate, Issuer) are
validated by the apiserver for real: taken from the projects' Go modules (the module proxy is reachable,
release downloads are not)."""

import json
import os
import shutil

CRDS = [
    ("github.com/prometheus-operator/prometheus-operator", "v0.85.0",
     ["example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml",
      "example/prometheus-operator-crd/monitoring.coreos.com_podmonitors.yaml",
      "example/prometheus-operator-crd/monitoring.coreos.com_prometheusrules.yaml"]),
    ("github.com/cert-manager/cert-manager", "v1.21.2",
     ["deploy/crds/cert-manager.io_certificates.yaml", "deploy/crds/cert-manager.io_issuers.yaml"]),
]
NAMES = ["servicemonitors.monitoring.coreos.com", "podmonitors.monitoring.coreos.com",
         "prometheusrules.monitoring.coreos.com", "certificates.cert-manager.io", "issuers.cert-manager.io"]


def go_module_file(run, cache, module, version, path):
    go = shutil.which("go") or "/usr/local/go/bin/go"
    godir = os.path.join(cache, "go")
    env = dict(os.environ, GOMODCACHE=f"{godir}/mod", GOCACHE=f"{godir}/build", GOTOOLCHAIN="local", GOFLAGS="-modcacherw", GOWORK="off")
    d = json.loads(run([go, "mod", "download", "-json", f"{module}@{version}"], env=env).stdout)["Dir"]
    return os.path.join(d, path)


def install(run, kubectl, log, cache):
    files = [go_module_file(run, cache, m, v, p) for m, v, paths in CRDS for p in paths]
    for f in files:
        kubectl("apply", "--server-side", "--force-conflicts", "--field-manager=popfleet-chart-test", "-f", f)
    kubectl("wait", "--for=condition=Established", "--timeout=60s", *(f"crd/{n}" for n in NAMES))
    log("ServiceMonitor, PodMonitor, PrometheusRule and cert-manager CRDs installed from their Go modules")
