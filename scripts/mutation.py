#!/usr/bin/env python3
"""Mutation testing of the pure decision code with mutmut 3 (`make mutation`).

mutmut names a mutant by its module path under `src/` (or the project root), but this
repository maps its packages from `libs/` and `services/*/` (pyproject's package-dir). So the
run happens in a staging directory, `.local/mutation/` by default (git ignores `.local/`): the
packages are copied there under `src/` with their import names, with the tests, and mutmut runs
in it, writing its `mutants/` there too. Nothing is written to the source tree.

    .venv/bin/python scripts/mutation.py [--stage DIR] [--max-children N]

Prints mutmut's results (every mutant that was not killed) and a score line; exits 0 (the score
is reported, not enforced: docs/TESTING.md lists the survivors and why they live).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# import name -> source directory (as in pyproject's [tool.setuptools.package-dir])
PACKAGES = {
    "scheduler": "libs/scheduler",
    "scheduler_schemas": "schemas",
    "scheduler_ingest": "services/ingest/scheduler_ingest",
    "scheduler_bucketer": "services/bucketer/scheduler_bucketer",
    "scheduler_releaser": "services/releaser/scheduler_releaser",
}

# What is mutated: the pure domain and the dispatcher's decisions (placement and the status
# precedence live in the domain). Globs relative to the staging directory.
MUTATE = [
    "src/scheduler/domain/*.py",
    "src/scheduler_releaser/dispatcher/verdict.py",
]

# The fast unit tests that exercise them; mutmut runs, per mutant, only those that reach the
# mutated function.
TESTS = [
    "tests/unit/test_domain.py",
    "tests/unit/test_sendat.py",
    "tests/unit/test_validation.py",
    "tests/unit/test_pinned_values.py",
    "tests/unit/test_recurrence.py",
    "tests/unit/test_recurrence_dst.py",
    "tests/unit/test_mutation_kills.py",
    "tests/unit/test_bucket_index.py",
    "tests/unit/ingest/test_idempotency.py",
    "tests/unit/ingest/test_log_view.py",
    "tests/unit/bucketer/test_idempotency.py",
    "tests/unit/releaser/test_dispatcher.py",
    "tests/unit/releaser/test_dispatch_delay.py",
    "tests/unit/releaser/test_rest.py",
    "tests/unit/releaser/test_release_interleavings.py",
    "tests/unit/releaser/test_release_properties.py",
    "tests/unit/releaser/test_structures.py",
]


# mutmut 3.7 reads `item._nodeid`, which pytest 9 no longer has (mutmut 3.8 reads `nodeid` but
# needs a click that faust-streaming refuses): the staged copy of the tests gets it back.
PYTEST_9_SHIM = """

import _pytest.nodes

if not hasattr(_pytest.nodes.Node, "_nodeid"):
    _pytest.nodes.Node._nodeid = property(lambda node: node.nodeid)  # type: ignore[attr-defined]
"""


def _toml_list(items: list[str]) -> str:
    return "[" + ", ".join(f'"{item}"' for item in items) + "]"


def stage(stage_dir: Path) -> None:
    """A fresh copy of the packages and the tests; mutmut's own cache is dropped with it."""
    if stage_dir.exists():
        shutil.rmtree(stage_dir)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for name, source in PACKAGES.items():
        shutil.copytree(ROOT / source, stage_dir / "src" / name, ignore=ignore)
    shutil.copytree(ROOT / "tests", stage_dir / "tests", ignore=ignore)
    with (stage_dir / "tests" / "conftest.py").open("a") as conftest:
        conftest.write(PYTEST_9_SHIM)
    # the project's pytest settings (markers, strict config, warnings as errors), plus mutmut's
    pyproject = (ROOT / "pyproject.toml").read_text()
    pyproject += f"""
[tool.mutmut]
source_paths = ["src"]
only_mutate = {_toml_list(MUTATE)}
pytest_add_cli_args_test_selection = {_toml_list(TESTS)}
pytest_add_cli_args = ["-p", "no:cacheprovider", "-q"]
use_git_change_detection = false
"""
    (stage_dir / "pyproject.toml").write_text(pyproject)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stage", type=Path, default=ROOT / ".local" / "mutation")
    parser.add_argument("--max-children", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    mutmut = Path(sys.executable).parent / "mutmut"
    stage(args.stage)
    started = time.monotonic()
    # its own session: mutmut ends its process group when it is done, which took this script
    run = subprocess.run(  # noqa: S603 - our own venv's mutmut
        [str(mutmut), "run", "--max-children", str(args.max_children)],
        cwd=args.stage,
        check=False,
        start_new_session=True,
    )
    elapsed = time.monotonic() - started
    results = subprocess.run(  # noqa: S603
        [str(mutmut), "results", "--all", "true"],
        cwd=args.stage,
        check=False,
        capture_output=True,
        text=True,
    )
    counts: dict[str, int] = {}
    for line in results.stdout.splitlines():
        if ": " in line:
            status = line.rsplit(": ", 1)[1].strip()
            counts[status] = counts.get(status, 0) + 1
    survivors = [
        line.strip()
        for line in results.stdout.splitlines()
        if line.strip() and not line.strip().endswith((": killed", ": timeout", ": segfault"))
    ]
    print("\n".join(survivors) or "no surviving mutant")
    total = sum(counts.values())
    # a timeout or a crash is a mutant the tests noticed (it made them loop): detected too
    detected = sum(counts.get(s, 0) for s in ("killed", "timeout", "segfault"))
    score = 100.0 * detected / total if total else 0.0
    summary = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
    print(f"mutation score: {detected}/{total} detected ({score:.1f} %): {summary}")
    print(f"took {elapsed:.0f} s with {args.max_children} children")
    print(f"inspect one: cd {args.stage} && {mutmut} show NAME")
    return run.returncode


if __name__ == "__main__":
    sys.exit(main())
