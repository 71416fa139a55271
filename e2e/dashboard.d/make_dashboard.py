#!/usr/bin/env python3
"""Writes charts/popfleet/files/dashboards/popfleet.json, the chart's Grafana dashboard.

Kept as code so the panels stay a list of (title, unit, queries) that e2e/dashboard-render draws
from the very same JSON; run it after changing a panel and commit both.

    python3 e2e/dashboard.d/make_dashboard.py
"""

import json
import os

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(REPO, "charts", "popfleet", "files", "dashboards", "popfleet.json")

SEL = 'namespace=~"$namespace", pop3cluster=~"$pop3cluster", datacenter=~"$datacenter"'
RATE = "$__rate_interval"


def quantile(q, metric, by, extra=""):
    sel = SEL + (", " + extra if extra else "")
    return f"histogram_quantile({q}, sum by (le{', ' + by if by else ''}) (rate({metric}_bucket{{{sel}}}[{RATE}])))"


# (row, [(title, unit, [(expr, legend)])])
ROWS = [
    ("Traffic", [
        ("Open sessions", "short", [(f"sum by (protocol) (pop3d_active_sessions{{{SEL}}})", "{{protocol}}")]),
        ("LMTP deliveries per recipient", "reqps",
         [(f"sum by (result) (rate(pop3d_deliveries_total{{{SEL}}}[{RATE}]))", "{{result}}")]),
        ("POP3 logins", "reqps", [(f"sum by (result) (rate(pop3d_logins_total{{{SEL}}}[{RATE}]))", "{{result}}")]),
        ("Refused logins by reason", "reqps",
         [(f"sum by (mechanism, reason) (rate(pop3d_auth_failures_total{{{SEL}}}[{RATE}]))", "{{mechanism}} {{reason}}")]),
    ]),
    ("Latency", [
        ("LMTP transaction (end of DATA to replies)", "s", [
            (quantile(0.5, "pop3d_lmtp_transaction_duration_seconds", ""), "p50"),
            (quantile(0.99, "pop3d_lmtp_transaction_duration_seconds", ""), "p99"),
        ]),
        ("POP3 login p99 by mechanism", "s", [
            (quantile(0.99, "pop3d_pop3_login_duration_seconds", "mechanism, result"), "{{mechanism}} {{result}}"),
        ]),
        ("QUIT commit (deletions)", "s", [
            (quantile(0.5, "pop3d_pop3_quit_commit_duration_seconds", ""), "p50"),
            (quantile(0.99, "pop3d_pop3_quit_commit_duration_seconds", ""), "p99"),
        ]),
        ("Store calls p99 by operation", "s", [
            (quantile(0.99, "pop3d_store_operation_duration_seconds", "backend, operation"), "{{backend}} {{operation}}"),
        ]),
    ]),
    ("Errors", [
        ("Store errors by kind", "reqps",
         [(f"sum by (backend, kind) (rate(pop3d_store_errors_total{{{SEL}}}[{RATE}]))", "{{backend}} {{kind}}")]),
        # `or vector(0)`: no 4xx series at all is 0 %, not "no data".
        ("LMTP 4xx share", "percentunit", [(
            f'(sum(rate(pop3d_deliveries_total{{{SEL}, result=~"tempfail|no_space"}}[{RATE}])) or vector(0)) '
            f"/ sum(rate(pop3d_deliveries_total{{{SEL}}}[{RATE}]))", "4xx")]),
        ("TLS handshakes", "reqps",
         [(f"sum by (protocol, result) (rate(pop3d_tls_handshakes_total{{{SEL}}}[{RATE}]))", "{{protocol}} {{result}}")]),
        ("Orphans left for repair", "short",
         [(f"sum(increase(pop3d_repair_orphans_left_total{{{SEL}}}[1h]))", "last hour")]),
    ]),
    ("Operator", [
        ("Reconcile p99 by result", "s", [(
            f"histogram_quantile(0.99, sum by (le, result) (rate(popfleet_operator_reconcile_duration_seconds_bucket[{RATE}])))",
            "{{result}}")]),
        ("Reconcile failures by error", "reqps",
         [(f"sum by (error) (rate(popfleet_operator_reconcile_failures_total[{RATE}]))", "{{error}}")]),
    ]),
]


def variable(name, query):
    return {
        "name": name, "label": name, "type": "query", "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "query": {"query": query, "refId": name}, "definition": query, "refresh": 2, "includeAll": True,
        "multi": True, "allValue": ".*", "current": {"text": "All", "value": "$__all"}, "sort": 1,
    }


def dashboard():
    panels, y, pid = [], 0, 1
    for row, row_panels in ROWS:
        panels.append({"type": "row", "title": row, "id": pid, "collapsed": False,
                       "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}})
        pid, y = pid + 1, y + 1
        width = 24 // len(row_panels)
        for i, (title, unit, queries) in enumerate(row_panels):
            panels.append({
                "type": "timeseries", "title": title, "id": pid,
                "datasource": {"type": "prometheus", "uid": "${datasource}"},
                "gridPos": {"h": 8, "w": width, "x": i * width, "y": y},
                "fieldConfig": {"defaults": {"unit": unit, "custom": {"fillOpacity": 10}}, "overrides": []},
                "options": {"legend": {"displayMode": "list", "placement": "bottom"}, "tooltip": {"mode": "multi"}},
                "targets": [{"refId": chr(65 + j), "expr": e, "legendFormat": legend}
                            for j, (e, legend) in enumerate(queries)],
            })
            pid += 1
        y += 8
    return {
        "uid": "popfleet-pop3d", "title": "popfleet: pop3d and operator", "tags": ["popfleet", "pop3", "mail"],
        "schemaVersion": 39, "version": 1, "editable": True, "refresh": "30s", "timezone": "utc",
        "time": {"from": "now-3h", "to": "now"},
        "templating": {"list": [
            {"name": "datasource", "label": "Prometheus", "type": "datasource", "query": "prometheus",
             "current": {}, "hide": 0},
            variable("namespace", "label_values(pop3d_connections_total, namespace)"),
            variable("pop3cluster", 'label_values(pop3d_connections_total{namespace=~"$namespace"}, pop3cluster)'),
            variable("datacenter",
                     'label_values(pop3d_connections_total{namespace=~"$namespace", pop3cluster=~"$pop3cluster"}, datacenter)'),
        ]},
        "panels": panels,
    }


if __name__ == "__main__":
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        json.dump(dashboard(), f, indent=1)
        f.write("\n")
    print(f"wrote {OUT}")
