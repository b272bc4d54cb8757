"""Every service process collects cycles every YOUNG_THRESHOLD allocations (scheduler.gc_tuning):
the setting itself, and that each process's entry point applies it first."""

from __future__ import annotations

import ast
import gc
from pathlib import Path

import pytest

from scheduler.gc_tuning import OLDER_THRESHOLD, YOUNG_THRESHOLD, tune_gc

pytestmark = pytest.mark.unit
REPO = Path(__file__).resolve().parents[2]
# each process's entry point: the four services' main(), and what a dispatcher's child runs first
ENTRY_POINTS = {
    "services/ingest/scheduler_ingest/main.py": "main",
    "services/bucketer/scheduler_bucketer/main.py": "main",
    "services/releaser/scheduler_releaser/releaser/main.py": "main",
    "services/releaser/scheduler_releaser/dispatcher/main.py": "main",
    "services/releaser/scheduler_releaser/child_process.py": "child_started",
}


def test_tune_gc_sets_the_thresholds() -> None:
    before = gc.get_threshold()
    try:
        tune_gc()
        assert gc.get_threshold() == (YOUNG_THRESHOLD, OLDER_THRESHOLD, OLDER_THRESHOLD)
    finally:
        gc.set_threshold(*before)


@pytest.mark.parametrize(("path", "function"), sorted(ENTRY_POINTS.items()))
def test_each_process_entry_point_tunes_the_collector(path: str, function: str) -> None:
    tree = ast.parse((REPO / path).read_text())
    [entry] = [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef) and node.name == function
    ]
    calls = [
        node.func.id
        for node in ast.walk(entry)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
    ]
    assert "tune_gc" in calls, f"{path}:{function} does not call tune_gc()"
