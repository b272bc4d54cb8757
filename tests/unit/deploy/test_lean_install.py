"""The image installs the runtime dependencies only; the services import nothing else.

The benchmark-only packages (faust-streaming, aiokafka, matplotlib: the `bench` extra) stay out
of the runtime dependencies and the image, and no module under services/ or libs/ imports a
package outside the runtime closure of uv.lock (what `uv sync --no-dev` installs in the image),
so nothing works on a development venv and fails in a pod.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions

import pytest

from tests.support.python_source import parse

from .support import ROOT

pytestmark = pytest.mark.unit

PROJECT = "pit-scheduler"
BENCH_ONLY = {"faust-streaming", "aiokafka", "matplotlib"}
FIRST_PARTY = {
    "scheduler",
    "scheduler_schemas",
    "scheduler_ingest",
    "scheduler_bucketer",
    "scheduler_releaser",
}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _pyproject() -> dict:
    with (ROOT / "pyproject.toml").open("rb") as f:
        return tomllib.load(f)


def _runtime_closure() -> set[str]:
    """Every distribution the lock installs for the project without extras."""
    with (ROOT / "uv.lock").open("rb") as f:
        packages = {_norm(p["name"]): p for p in tomllib.load(f)["package"]}
    seen: set[tuple[str, str]] = set()
    todo = [(_norm(PROJECT), "")]
    while todo:
        name, extra = todo.pop()
        package = packages[name]
        wanted = list(package.get("dependencies", []))
        if extra:
            wanted += package.get("optional-dependencies", {}).get(extra, [])
        for dep in wanted:
            for key in [(_norm(dep["name"]), e) for e in ["", *dep.get("extra", [])]]:
                if key not in seen:
                    seen.add(key)
                    todo.append(key)
    return {name for name, _ in seen}


# Test and benchmark support shipped with the library (it may import dev-only packages, lazily);
# no service imports it (checked below).
TESTING = ROOT / "libs/scheduler/testing"


def _imports() -> dict[str, set[str]]:
    """Top-level module -> the files under services/ and libs/ that import it."""
    found: dict[str, set[str]] = {}
    for path in [*ROOT.glob("services/**/*.py"), *ROOT.glob("libs/**/*.py")]:
        if TESTING in path.parents:
            continue
        for node in ast.walk(parse(path.read_text(), str(path))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            for name in names:
                found.setdefault(name.split(".")[0], set()).add(str(path.relative_to(ROOT)))
    return found


def test_bench_only_packages_are_an_extra_not_a_dependency() -> None:
    project = _pyproject()["project"]
    runtime = {_norm(re.split(r"[\[<>=!~; ]", d)[0]) for d in project["dependencies"]}
    assert not runtime & BENCH_ONLY, runtime & BENCH_ONLY
    bench = {
        _norm(re.split(r"[\[<>=!~; ]", d)[0]) for d in project["optional-dependencies"]["bench"]
    }
    assert bench == BENCH_ONLY
    assert not _runtime_closure() & BENCH_ONLY, "a runtime dependency pulls a bench-only one in"


def test_the_image_installs_no_extra() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    syncs = re.findall(r"uv sync[^\n]*", dockerfile)
    assert syncs and all("--no-dev" in s for s in syncs)
    assert not any("--extra" in s or "--all-extras" in s for s in syncs), syncs


def test_services_and_libs_import_only_runtime_dependencies() -> None:
    closure = _runtime_closure()
    providers = packages_distributions()
    outside = {}
    for module, files in _imports().items():
        if module in FIRST_PARTY or module in sys.stdlib_module_names or module == "__future__":
            continue
        dists = {_norm(d) for d in providers.get(module, [])}
        assert dists, f"{module} (imported by {sorted(files)}) is not installed"
        if not dists & closure:
            outside[module] = sorted(files)
    assert not outside, f"imported but not a runtime dependency: {outside}"


def test_no_service_imports_the_testing_support() -> None:
    for path in [*ROOT.glob("services/**/*.py"), *ROOT.glob("libs/**/*.py")]:
        if TESTING not in path.parents:
            assert "scheduler.testing" not in path.read_text(), path


def test_the_check_sees_a_bench_only_import() -> None:
    """faust would be caught: it is installed here, but only through the bench extra."""
    providers = packages_distributions()
    assert {_norm(d) for d in providers["faust"]} == {"faust-streaming"}
    assert "faust-streaming" not in _runtime_closure()
