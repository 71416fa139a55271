"""POPFLEET_CASSANDRA_COMMITLOG: the commit log mode e2e/cassandra starts its nodes with, as
`e2e/cassandra config NODE` renders it (no node is started: the shared cluster stays as it is).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

CASSANDRA = Path(__file__).resolve().parents[1] / "cassandra"


def config(mode: str | None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "POPFLEET_CASSANDRA_COMMITLOG"}
    if mode is not None:
        env["POPFLEET_CASSANDRA_COMMITLOG"] = mode
    return subprocess.run([str(CASSANDRA), "config", "n1"], capture_output=True, text=True, env=env, timeout=60)


def settings(out: str) -> tuple[str, str | None, str]:
    lines = out.splitlines()
    sync = next(ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("commitlog_sync:"))
    period = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("commitlog_sync_period:")), None)
    skip = next(ln.split("=", 1)[1] for ln in lines if ln.startswith("-Dcassandra.skip_sync="))
    return sync, period, skip


@pytest.mark.parametrize("mode, expected", [
    (None, ("batch", None, "true")),  # the default: what the fault tests need
    ("batch-nosync", ("batch", None, "true")),
    ("batch", ("batch", None, "false")),
    ("periodic", ("periodic", "10000ms", "false")),  # Cassandra's own defaults, as in production
])
def test_each_mode_renders_its_settings(mode, expected):
    r = config(mode)
    assert r.returncode == 0, r.stderr
    assert settings(r.stdout) == expected


def test_an_unknown_mode_is_refused():
    r = config("fsync-sometimes")
    assert r.returncode != 0
    assert "batch-nosync, batch or periodic" in r.stderr
    assert "commitlog_sync" not in r.stdout
