"""The report's PNG figures (matplotlib, headless), drawn from the series in results.json."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display: files only

import matplotlib.pyplot as plt  # after the backend is chosen

DPI = 110


def _save(fig: Any, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def lateness_hist(steady: list[dict[str, Any]], destination: str, path: Path) -> None:
    runs = [s for s in steady if s["destination"] == destination and s["series"]["pooled"]]
    if not runs:
        return
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for s in runs:
        ax.hist(s["series"]["pooled"], bins=80, histtype="step", label=f"{s['rate']:,}/s")
    ax.set_yscale("log")
    ax.set_xlabel("lateness, ms (receipt - sendAt)")
    ax.set_ylabel("messages")
    ax.set_title(f"Steady-state lateness to the {destination} destination (all runs)")
    ax.legend()
    _save(fig, path)


def lateness_time(steady: list[dict[str, Any]], destination: str, path: Path) -> None:
    runs = [s for s in steady if s["destination"] == destination and s["series"]["first_run"]]
    if not runs:
        return
    fig, axes = plt.subplots(len(runs), 1, figsize=(8, 2.6 * len(runs)), squeeze=False)
    for ax, s in zip(axes[:, 0], runs, strict=True):
        xs, ys = zip(*s["series"]["first_run"], strict=True)
        ax.plot(xs, ys, ".", markersize=2)
        ax.set_ylabel("lateness, ms")
        ax.set_title(f"{destination}, {s['rate']:,}/s (first run)", fontsize=10)
    axes[-1, 0].set_xlabel("due instant, s from the first due message")
    _save(fig, path)


def ingest(ingest: dict[str, Any], path: Path) -> None:
    names = list(ingest)
    acked = [ingest[n]["acked_per_s"].get("median", 0) for n in names]
    stored = [ingest[n]["stored_per_s"].get("median", 0) for n in names]
    fig, ax = plt.subplots(figsize=(8, 4))
    xs = range(len(names))
    ax.bar([x - 0.2 for x in xs], acked, width=0.4, label="acknowledged")
    ax.bar([x + 0.2 for x in xs], stored, width=0.4, label="stored (bucketer done)")
    ax.set_xticks(list(xs), [n.replace("_", " ") for n in names])
    ax.set_ylabel("messages / s (median of runs)")
    ax.set_title("Ingest throughput")
    ax.legend()
    _save(fig, path)


def hotspot(h: dict[str, Any], path: Path) -> None:
    lateness, received = h["series"]["lateness"], h["series"]["received_s"]
    if not lateness:
        return
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.hist(lateness, bins=80)
    left.set_xlabel("lateness, ms")
    left.set_ylabel("messages")
    left.set_title(f"{h['messages']:,} due in one second")
    right.plot(received, range(1, len(received) + 1))
    right.set_xlabel("s after the due second began")
    right.set_ylabel("delivered")
    right.set_title("Deliveries over time")
    _save(fig, path)


def recovery(r: dict[str, Any], path: Path) -> None:
    seconds = r["series"]["seconds"]
    if not seconds:
        return
    xs = [s[0] for s in seconds]
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.plot(xs, [s[2] for s in seconds], label="max")
    ax.plot(xs, [s[1] for s in seconds], label="p50")
    ax.axvline(r["series"]["kill_second"], color="red", linestyle="--", label="kill -9")
    ax.axhline(r["threshold_ms"], color="grey", linestyle=":", label="steady threshold")
    ax.set_yscale("symlog")
    ax.set_xlabel("due second")
    ax.set_ylabel("lateness, ms")
    ax.set_title(f"kill -9 of the {r['service']} at {r['rate']:,}/s")
    ax.legend()
    _save(fig, path)


def pending(pending: list[dict[str, Any]], path: Path) -> None:
    curves = [p for p in pending if p["series"]["curve"]]
    if not curves:
        return
    fig, ax = plt.subplots(figsize=(8, 4))
    for p in curves:
        ax.plot([c[1] for c in p["series"]["curve"]], [c[2] for c in p["series"]["curve"]])
    ax.set_xlabel("far-future messages stored so far in this section")
    ax.set_ylabel("stored msg/s (2 s windows)")
    ax.set_title("Ingest into storage as the pending count grows")
    _save(fig, path)


def draw_all(results: dict[str, Any], out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    steady = results.get("steady", [])
    for dest in ("kafka", "rest"):
        lateness_hist(steady, dest, out / f"lateness_hist_{dest}.png")
        lateness_time(steady, dest, out / f"lateness_time_{dest}.png")
    if results.get("ingest"):
        ingest(results["ingest"], out / "ingest.png")
    if results.get("hotspot"):
        hotspot(results["hotspot"], out / "hotspot.png")
    if results.get("hotspot_production"):
        hotspot(results["hotspot_production"], out / "hotspot_production.png")
    for r in results.get("recovery", []):
        recovery(r, out / f"recovery_{r['service']}.png")
    if results.get("pending"):
        pending(results["pending"], out / "pending.png")
    return sorted(out.glob("*.png"))
