"""The campaign's report in its output directory: report.json (everything), report.md (the
verdict, the fault timeline, worst lateness and recovery per fault) and lateness.png (lateness
of every first delivery over time, the faults shaded)."""

from __future__ import annotations

import dataclasses
import gzip
import json
from pathlib import Path
from typing import Any

from chaos.checker import RETRIED, UNEXPLAINED, Facts, Verdict
from chaos.faults import STEADY_WAIT_S

SAMPLE = 20  # ids of each violation kind listed in the markdown (all of them in the JSON)


def write(
    out: Path,
    verdict: Verdict,
    meta: dict[str, Any],
    timeline: list[dict[str, Any]],
    facts: Facts | None = None,
) -> None:
    out.mkdir(parents=True, exist_ok=True)
    if facts is not None:  # every message and arrival, for a post-mortem (facts.json.gz)
        with gzip.open(out / "facts.json.gz", "wt") as f:
            json.dump(dataclasses.asdict(facts), f, default=sorted)
    data = {"meta": meta, "timeline": timeline, "verdict": verdict.as_dict()}
    (out / "report.json").write_text(json.dumps(data, indent=1, default=str))
    (out / "report.md").write_text(markdown(verdict, meta, timeline))
    plot(out / "lateness.png", verdict, timeline, int(meta["started_ms"]))


def by_kind(verdict: Verdict) -> dict[str, dict[str, Any]]:
    """Per fault kind: how many, the worst lateness, and the time back to steady after the
    heal (the worst of those that got back; `never` counts those that did not before the next
    fault, `unseen_ms` the longest such watch)."""
    out: dict[str, dict[str, Any]] = {}
    for f in verdict.faults:
        row = out.setdefault(
            f.kind, {"count": 0, "worst_ms": 0, "steady_ms": [], "never": 0, "unseen_ms": 0}
        )
        row["count"] += 1
        row["worst_ms"] = max(row["worst_ms"], f.worst_lateness_ms)
        if f.steady_after_heal_ms is None:
            row["never"] += 1
            row["unseen_ms"] = max(row["unseen_ms"], f.watched_ms)
        else:
            row["steady_ms"].append(f.steady_after_heal_ms)
    return out


def markdown(verdict: Verdict, meta: dict[str, Any], timeline: list[dict[str, Any]]) -> str:
    t0 = int(meta["started_ms"])
    lines = [
        f"# Chaos campaign, seed {meta['seed']}",
        "",
        f"`{meta['command']}`: {meta['duration_s']} s at {meta['rate']} msg/s, topology"
        f" {meta['topology']}; **{'PASS' if verdict.ok else 'FAIL'}**",
        "",
        f"- acknowledged {verdict.acked}, delivered {verdict.delivered},"
        f" aborted with a 200: {verdict.aborted_200}",
        f"- requests not acknowledged (no answer, 5xx or 429 after a retry):"
        f" {meta.get('refused', 0)}; unexpected answers: {len(meta.get('errors', []))}",
        f"- HTTP duplicates (at least once, not a violation): {verdict.http_duplicates};"
        f" a later attempt after a 2xx the dispatcher did not see in time:"
        f" {verdict.http_duplicates_by_fault.get(RETRIED, 0)}; neither that nor explained by a"
        f" dispatcher that ended between the two deliveries:"
        f" {verdict.http_duplicates_by_fault.get(UNEXPLAINED, 0)}",
        f"- services that exited on their own and were restarted: {meta.get('exits', [])}",
        f"- statuses that could not be read at the end, and why: {meta.get('unreadable', {})}",
        "",
        "## Violations",
        "",
        "| kind | count | first ids |",
        "|---|---|---|",
    ]
    for kind, count in verdict.violations.items():
        ids = ", ".join(getattr(verdict, kind)[:SAMPLE])
        lines.append(f"| {kind} | {count} | {ids} |")
    lines += [
        "",
        "## Faults",
        "",
        "Times in seconds from the start. *Worst late*: the latest first delivery of the messages"
        " due from the injection to the next fault. *Steady after*: from the heal until the"
        " lateness p99 of every 5 s window of due instants for the next 10 s is within 2x the"
        " pre-fault p99 (of the 30 s before the fault, or of the warm-up's last minute if lower;"
        " 50 ms at least); *> N*: not before the next fault, N s after the heal being the last"
        " instant a steady point could have been seen (the nemesis waits up to"
        f" {STEADY_WAIT_S:.0f} s for one)."
        " *HTTP dups*: the second deliveries this fault explains (it ended a dispatcher between"
        " the first delivery and the second).",
        "",
        "| at | kind | target | detail | healed | worst late (ms) | pre-fault p99 (ms)"
        " | steady after (s) | HTTP dups | error |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for window, stats in zip(timeline, verdict.faults, strict=False):
        steady = (
            f"> {stats.watched_ms / 1000:.0f}"
            if stats.steady_after_heal_ms is None
            else f"{stats.steady_after_heal_ms / 1000:.1f}"
        )
        lines.append(
            f"| {(window['started_ms'] - t0) / 1000:.1f} | {window['kind']} | {window['target']}"
            f" | {window['detail']} | {(window['healed_ms'] - t0) / 1000:.1f}"
            f" | {stats.worst_lateness_ms} | {stats.baseline_p99_ms} | {steady}"
            f" | {stats.http_duplicates} | {window['error']} |"
        )
    lines += [
        "",
        "## Per fault kind",
        "",
        "| kind | faults | worst late (ms) | back to steady after the heal, worst (s)"
        " | median (s) | not steady before the next fault (longest watch, s) |",
        "|---|---|---|---|---|---|",
    ]
    for kind, row in sorted(by_kind(verdict).items()):
        back = sorted(row["steady_ms"])
        worst = f"{back[-1] / 1000:.1f}" if back else "-"
        median = f"{back[len(back) // 2] / 1000:.1f}" if back else "-"
        never = f"{row['never']} ({row['unseen_ms'] / 1000:.0f})" if row["never"] else "0"
        lines.append(
            f"| {kind} | {row['count']} | {row['worst_ms']} | {worst} | {median} | {never} |"
        )
    lines += ["", "![lateness over time](lateness.png)", ""]
    return "\n".join(lines)


def plot(path: Path, verdict: Verdict, timeline: list[dict[str, Any]], t0: int) -> None:
    import matplotlib  # the bench extra; imported here so the checker does not need it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(14, 5))
    xs = [(due - t0) / 1000 for due, _ in verdict.lateness]
    ys = [max(late, 1) / 1000 for _, late in verdict.lateness]
    ax.scatter(xs, ys, s=2, color="tab:blue", label="first delivery")
    colors = plt.get_cmap("tab10")
    kinds = sorted({w["kind"] for w in timeline})
    for window in timeline:
        color = colors(kinds.index(window["kind"]) % 10)
        start, end = (window["started_ms"] - t0) / 1000, (window["healed_ms"] - t0) / 1000
        ax.axvspan(start, max(end, start + 0.5), color=color, alpha=0.25)
        ax.text(
            start, 1.02, window["kind"], rotation=90, fontsize=6, transform=ax.get_xaxis_transform()
        )
    for kind in kinds:
        ax.plot([], [], color=colors(kinds.index(kind) % 10), alpha=0.4, linewidth=8, label=kind)
    ax.set_yscale("log")
    ax.set_xlabel("due instant, s from the start")
    ax.set_ylabel("lateness, s (log)")
    ax.legend(loc="upper right", fontsize=7, ncol=3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
