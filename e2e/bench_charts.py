"""Charts of one e2e/bench run, drawn with matplotlib from the reports popfleet-load wrote.

timeline_chart: delivered mail/s, LMTP p50 and LMTP p99 per interval of the delivery phase, one
line per target. search_chart: the search's trials, LMTP p99 against the offered rate, one line per
target, with the bound. Both are SVG (text kept as text, so the files stay small and searchable).
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

COLOURS = {"embedded": "tab:blue", "cassandra": "tab:orange", "dovecot": "tab:green"}


def pyplot():
    """matplotlib's pyplot on the file-only backend; e2e/bench installs matplotlib in its venv."""
    import matplotlib
    matplotlib.use("Agg")
    matplotlib.rcParams["svg.fonttype"] = "none"
    matplotlib.rcParams["svg.hashsalt"] = "popfleet-bench"  # the same run draws the same file
    import matplotlib.pyplot as plt
    return plt


def plain_log(ax, axis: str = "y") -> None:
    """A log scale labelled 20, 50, 100 rather than 2x10^1 (minor ticks: only the 2s and 5s)."""
    from matplotlib.ticker import FuncFormatter
    target = ax.yaxis if axis == "y" else ax.xaxis
    (ax.set_yscale if axis == "y" else ax.set_xscale)("log")
    target.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    target.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}" if f"{v:e}"[0] in "25" else ""))


def caption(command: str) -> str:
    """What a reader needs to weigh the figures: the command, the machine, how busy it was."""
    load1, _, _ = os.getloadavg()
    return (f"{command}\n{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {socket.gethostname()}, "
            f"{os.cpu_count()} CPUs, load average {load1:.1f} when drawn")


def measured_intervals(report: dict) -> list[dict]:
    """The report's timeline without its last interval when that one lies past the offered duration:
    it holds only the stragglers and would show as a false drop of the rate."""
    tl = report.get("timeline") or []
    if len(tl) > 1 and tl[-1]["t_s"] + tl[-1]["seconds"] > report.get("duration_s", float("inf")) + 1e-6:
        tl = tl[:-1]
    return tl


def timeline_chart(reports: dict[str, dict], path: Path, command: str) -> None:
    plt = pyplot()
    fig, (rate_ax, p50_ax, p99_ax) = plt.subplots(3, 1, figsize=(8, 8), sharex=True)
    for name, r in reports.items():
        tl = measured_intervals(r)
        # the x of a point is the middle of its interval
        xs = [p["t_s"] + p["seconds"] / 2 for p in tl]
        style = {"label": name, "color": COLOURS.get(name), "marker": "." if len(tl) < 40 else None}
        rate_ax.plot(xs, [p["delivered_per_s"] for p in tl], **style)
        p50_ax.plot(xs, [p.get("p50_ms") for p in tl], **style)
        p99_ax.plot(xs, [p.get("p99_ms") for p in tl], **style)
    width = next((r["timeline"][0]["seconds"] for r in reports.values() if r.get("timeline")), 0)
    rate_ax.set_ylabel("delivered mail/s")
    rate_ax.set_ylim(bottom=0)
    p50_ax.set_ylabel("LMTP p50 ms")
    p99_ax.set_ylabel("LMTP p99 ms")
    for ax in (p50_ax, p99_ax):
        plain_log(ax)
    for ax in (rate_ax, p50_ax, p99_ax):
        ax.grid(True, which="major", alpha=0.3)
    p99_ax.set_xlabel(f"seconds into the delivery phase (points per {width:g} s interval, by completion)")
    rate_ax.legend(fontsize=8)
    any_r = next(iter(reports.values()))
    rate_ax.set_title(f"{any_r['target_rate']:g} mail/s offered for {any_r['duration_s']:g} s to "
                      f"{any_r['users']} users, sizes {any_r['size_mix']}", fontsize=10)
    fig.text(0.01, 0.005, caption(command), fontsize=7, va="bottom")
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    fig.savefig(path)
    plt.close(fig)


def search_chart(reports: dict[str, dict], path: Path, command: str, p99_bound: float) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 5))
    for name, r in reports.items():
        trials = sorted(r.get("search_trials") or [], key=lambda t: t["offered_per_s"])
        colour = COLOURS.get(name)
        ax.plot([t["offered_per_s"] for t in trials], [t["p99_ms"] for t in trials], color=colour, label=name)
        for t in trials:
            # filled: sustained (p99 within the bound, no error, >= 95 % delivered); hollow: not
            ax.plot(t["offered_per_s"], t["p99_ms"], "o", color=colour,
                    markerfacecolor=colour if t["sustained"] else "white")
        if trials:
            best = r["target_rate"]
            ax.annotate(f"{best:.0f}/s", (best, next(t["p99_ms"] for t in trials if t["offered_per_s"] == best)),
                        textcoords="offset points", xytext=(4, -12), fontsize=8, color=colour)
    ax.axhline(p99_bound, color="grey", linestyle="--", linewidth=1, label=f"bound: p99 {p99_bound:g} ms")
    plain_log(ax, "x")
    plain_log(ax, "y")
    ax.set_xlabel("offered mail/s (each trial one delivery phase)")
    ax.set_ylabel("LMTP p99 ms")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8)
    any_r = next(iter(reports.values()))
    ax.set_title(f"search: highest rate with LMTP p99 <= {p99_bound:g} ms and no errors; "
                 f"{any_r['duration_s']:g} s per trial, sizes {any_r['size_mix']}\n"
                 "filled: sustained, hollow: not", fontsize=10)
    fig.text(0.01, 0.005, caption(command), fontsize=7, va="bottom")
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    fig.savefig(path)
    plt.close(fig)


def check_chart(path: Path, names: list[str]) -> str | None:
    """Why the chart at `path` is not what the run promised (None when it is): an SVG naming every
    target in its legend."""
    if not path.exists():
        return f"{path} missing"
    text = path.read_text()
    if not text.lstrip().startswith("<?xml") or "<svg" not in text:
        return f"{path} is not an SVG"
    missing = [n for n in names if f">{n}<" not in text]
    return f"{path} has no line for {', '.join(missing)}" if missing else None
