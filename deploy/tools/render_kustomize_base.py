"""Regenerate deploy/k8s/kustomize/base from the Helm chart (its default values).

    .venv/bin/python deploy/tools/render_kustomize_base.py

The chart is the source; the base is its plain-manifest twin for users without Helm. Helm-only
details are dropped (chart labels, hook annotations, the config checksum: kustomize's
configMapGenerator adds a content hash to the ConfigMap name instead, which rolls the pods the
same way). The chart-generated Secret is left out: kustomize users create `scheduler-secrets`
themselves (docs/OPERATIONS.md). tests/unit/deploy/test_chart_vs_kustomize.py checks that the
two stay identical in substance, whoever edits which.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy/k8s/chart"
BASE = ROOT / "deploy/k8s/kustomize/base"
HELM = Path(os.environ.get("SCHEDULER_TOOLS_DIR") or ROOT / ".local/tools") / "bin/helm"
KUBE_VERSION = "1.31.0"
RELEASE = "scheduler"
# The chart's values that give the base's shape: fixed names, the user-made Secret.
BASE_VALUES = ["fullnameOverride=scheduler", "secrets.existingSecret=scheduler-secrets"]

HELM_LABELS = {"helm.sh/chart", "app.kubernetes.io/managed-by"}
HELM_ANNOTATIONS = ("helm.sh/", "checksum/")
HEADER = (
    "# GENERATED from deploy/k8s/chart by deploy/tools/render_kustomize_base.py: edit the chart,\n"
    "# then re-run the script (tests/unit/deploy checks that chart and base agree).\n"
)
FILES = {
    "ServiceAccount": "serviceaccount.yaml",
    "Deployment": "deployments.yaml",
    "Service": "services.yaml",
    "HorizontalPodAutoscaler": "hpa.yaml",
    "PodDisruptionBudget": "pdb.yaml",
    "Job": "job-setup.yaml",
}


def render_chart(*set_values: str) -> list[dict[str, Any]]:
    args = [str(HELM), "template", RELEASE, str(CHART), "--kube-version", KUBE_VERSION]
    for value in (*BASE_VALUES, *set_values):
        args += ["--set", value]
    out = subprocess.run(args, check=True, capture_output=True, text=True).stdout  # noqa: S603
    return [doc for doc in yaml.safe_load_all(out) if doc]


def _strip_helm(node: Any) -> None:
    """Drop Helm-only labels and annotations wherever metadata appears."""
    if isinstance(node, dict):
        meta = node.get("metadata")
        if isinstance(meta, dict):
            labels = meta.get("labels") or {}
            for key in HELM_LABELS & labels.keys():
                del labels[key]
            annotations = meta.get("annotations") or {}
            for key in [k for k in annotations if k.startswith(HELM_ANNOTATIONS)]:
                del annotations[key]
            if "annotations" in meta and not annotations:
                del meta["annotations"]
        for value in node.values():
            _strip_helm(value)
    elif isinstance(node, list):
        for item in node:
            _strip_helm(item)


def _env_file(config: dict[str, Any]) -> str:
    lines = [f"{key}={value}" for key, value in sorted(config["data"].items())]
    return (
        "# GENERATED from the chart's default values (deploy/tools/render_kustomize_base.py).\n"
        "# Override entries in an overlay's configMapGenerator (behavior: merge).\n"
        + "\n".join(lines)
        + "\n"
    )


def main() -> int:
    docs = render_chart()
    by_file: dict[str, list[dict[str, Any]]] = {}
    for doc in docs:
        _strip_helm(doc)
        if doc["kind"] == "ConfigMap":
            (BASE / "config.env").write_text(_env_file(doc))
            continue
        by_file.setdefault(FILES[doc["kind"]], []).append(doc)
    for name, items in by_file.items():
        body = "---\n".join(yaml.safe_dump(item, sort_keys=False) for item in items)
        (BASE / name).write_text(HEADER + body)
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "labels": [
            {"pairs": {"app.kubernetes.io/managed-by": "kustomize"}, "includeSelectors": False}
        ],
        "resources": sorted(by_file),
        "configMapGenerator": [{"name": "scheduler-config", "envs": ["config.env"]}],
    }
    (BASE / "kustomization.yaml").write_text(
        HEADER + yaml.safe_dump(kustomization, sort_keys=False)
    )
    print(f"wrote {len(by_file) + 2} files into {BASE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
