"""e2e/chart-test's checks of the chart's monitoring objects: the PodMonitor, the PrometheusRule and the
Grafana dashboard ConfigMap (templates/podmonitor.yaml, prometheusrule.yaml, dashboard.yaml).

- `promtool check rules` on the rendered rules, and `promtool test rules` with alerts.test.yaml (each alert
  pending, firing with its exact labels and annotations, resolved);
- every pop3d_*/popfleet_operator_* name the rules and the dashboard read is one the code registers
  (pop3d/src/metrics.rs, operator/src/telemetry.rs), with the suffixes its type allows;
- the dashboard file is what e2e/dashboard.d/make_dashboard.py makes, and the ConfigMap carries it as is;
- the PodMonitor selects the pods the operator makes, on their `ops` port.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "e2e", "dashboard.d"))
import make_dashboard  # noqa: E402

# The values that turn every monitoring object on (ci/full-values.yaml does too).
ENABLED = ["metrics.podMonitor.enabled=true", "metrics.prometheusRule.enabled=true", "metrics.dashboard.enabled=true"]
SUFFIXES = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"], "gauge": [""]}


def registered_metrics():
    """{exposed name: type} from the register calls in the code (counters get `_total` on the wire)."""
    out = {}
    sources = [("pop3d", os.path.join(REPO, "pop3d", "src", "metrics.rs")),
               ("popfleet_operator", os.path.join(REPO, "operator", "src", "telemetry.rs"))]
    for prefix, path in sources:
        text = open(path).read()
        # The type is that of the field or local variable registered, as declared first in the file.
        for m in re.finditer(r'\.register\(\s*"([a-z0-9_]+)",\s*"[^"]*",\s*([a-z_.]+)\.clone\(\)', text, re.S):
            name, field = m.group(1), m.group(2).split(".")[-1]
            decl = re.search(rf"\b{field}: (.*)", text)
            kind = decl.group(1) if decl else ""
            t = "histogram" if re.search(r"Histogram|LatencyFamily", kind) else "gauge" if "Gauge" in kind else "counter"
            out[f"{prefix}_{name}"] = t
    return out


def check_names(exprs, check, where):
    known = registered_metrics()
    exposed = {n + s for n, t in known.items() for s in SUFFIXES[t]}
    used = set()
    for e in exprs:
        used.update(re.findall(r"\b((?:pop3d|popfleet_operator)_[a-z0-9_]+)", e))
    unknown = sorted(used - exposed)
    check(used and not unknown, f"{where} read series no code exposes: {unknown} (known: {sorted(exposed)})")
    return used


def rule_exprs(spec):
    return [r["expr"] for g in spec["groups"] for r in g["rules"]]


def check_rules(docs, check, log):
    rules = [d for d in docs if d["kind"] == "PrometheusRule"]
    check(len(rules) == 1, "no PrometheusRule rendered with metrics.prometheusRule.enabled")
    spec = rules[0]["spec"]
    alerts = sorted(r["alert"] for g in spec["groups"] for r in g["rules"])
    used = check_names(rule_exprs(spec), check, "the alert rules")
    promtool = shutil.which("promtool")
    check(promtool, "no promtool (e2e/install-deps installs Debian's prometheus package)")
    work = tempfile.mkdtemp(prefix="popfleet-rules.")
    try:
        import yaml
        with open(os.path.join(work, "rules.yaml"), "w") as f:
            yaml.safe_dump(spec, f, sort_keys=False)
        shutil.copy(os.path.join(HERE, "alerts.test.yaml"), work)
        for args in (["check", "rules", "rules.yaml"], ["test", "rules", "alerts.test.yaml"]):
            r = subprocess.run([promtool, *args], cwd=work, capture_output=True, text=True)
            check(r.returncode == 0, f"promtool {' '.join(args)} failed:\n{r.stdout[-4000:]}{r.stderr[-2000:]}")
        tested = set(re.findall(r"alertname: (\w+)", open(os.path.join(HERE, "alerts.test.yaml")).read()))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    log(f"PrometheusRule: promtool check rules and test rules pass ({len(alerts)} alerts: {', '.join(alerts)}; "
        f"unit-tested: {', '.join(sorted(tested))}); {len(used)} series names all exposed by the code")


def check_dashboard(docs, check, log):
    cms = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-dashboard")]
    check(len(cms) == 1, "no dashboard ConfigMap rendered with metrics.dashboard.enabled")
    cm = cms[0]
    check(cm["metadata"]["labels"].get("grafana_dashboard") == "1", "the dashboard ConfigMap lacks grafana_dashboard")
    shipped = open(make_dashboard.OUT).read()
    check(json.loads(shipped) == make_dashboard.dashboard(),
          "files/dashboards/popfleet.json is stale: python3 e2e/dashboard.d/make_dashboard.py")
    check(json.loads(cm["data"]["popfleet.json"]) == json.loads(shipped), "the ConfigMap's dashboard is not the file")
    board = json.loads(shipped)
    exprs = [t["expr"] for p in board["panels"] for t in p.get("targets", [])]
    used = check_names(exprs, check, "the dashboard")
    log(f"dashboard ConfigMap: {len(exprs)} queries over {len(used)} series names, all exposed by the code")


def check_podmonitor(docs, check, log):
    pms = [d for d in docs if d["kind"] == "PodMonitor"]
    check(len(pms) == 1, "no PodMonitor rendered with metrics.podMonitor.enabled")
    spec = pms[0]["spec"]
    # What operator/src/resources.rs puts on every pop3d pod, and its container port names.
    check(spec["selector"]["matchLabels"] == {"app.kubernetes.io/name": "pop3d",
                                              "app.kubernetes.io/managed-by": "popfleet-operator"},
          f"PodMonitor selector {spec['selector']}")
    ep = spec["podMetricsEndpoints"][0]
    check(ep["port"] == "ops" and ep["path"] == "/metrics", f"PodMonitor endpoint {ep}")
    targets = {r["targetLabel"] for r in ep["relabelings"]}
    check(targets == {"pop3cluster", "datacenter"}, f"PodMonitor relabelings {ep['relabelings']}")
    log("PodMonitor: the operator's pop3d pods, port ops, labels pop3cluster and datacenter")


def static_checks(render, check, log):
    docs = render(None, *ENABLED)
    check_podmonitor(docs, check, log)
    check_rules(docs, check, log)
    check_dashboard(docs, check, log)
