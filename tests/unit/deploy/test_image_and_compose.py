"""The Dockerfile and deploy/compose.yaml cannot be built here: check every name they use.

Entry points are console scripts of pyproject.toml whose targets import; environment variables
are fields of the services' settings and their values parse; ports agree with those settings;
files the image copies exist and are not excluded by .dockerignore.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml

from .support import ROOT, console_scripts, load, settings_env_names

pytestmark = pytest.mark.unit

DOCKERFILE = (ROOT / "Dockerfile").read_text()
SERVICES = ("ingest", "bucketer", "releaser", "dispatcher")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "deploy/compose.yaml").read_text())


def _our_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {n: s for n, s in compose["services"].items() if s.get("image", "").startswith("pit-")}


def test_console_scripts_point_at_callables() -> None:
    scripts = console_scripts()
    for name in ("scheduler", *(f"scheduler-{s}" for s in SERVICES)):
        assert callable(load(scripts[name])), name


def test_compose_commands_are_console_scripts(compose) -> None:
    ours = _our_services(compose)
    assert set(ours) == {"setup", *SERVICES}
    scripts = console_scripts()
    for name, service in ours.items():
        assert service["command"][0] in scripts, name
    assert ours["setup"]["command"][-1] == "setup"
    for name in SERVICES:
        assert ours[name]["command"] == [f"scheduler-{name}"]


def test_dockerfile_names_console_scripts() -> None:
    scripts = console_scripts()
    named = set(re.findall(r"\bscheduler(?:-[a-z]+)?\b(?=\s|\"|$)", DOCKERFILE))
    assert {f"scheduler-{s}" for s in SERVICES} <= named
    assert named <= set(scripts), named - set(scripts)
    cmd = re.search(r'^CMD \["([^"]+)"', DOCKERFILE, re.M)
    assert cmd and cmd.group(1) in scripts


def test_compose_environment_is_settings_that_parse(compose, monkeypatch) -> None:
    known = settings_env_names()
    for key in known:
        monkeypatch.delenv(key, raising=False)
    for name, service in _our_services(compose).items():
        env = {k: str(v) for k, v in service["environment"].items()}
        assert set(env) <= set(known), (name, sorted(set(env) - set(known)))
        with monkeypatch.context() as m:
            for key, value in env.items():
                m.setenv(key, value.replace("${SCHEDULER_SECRET_PEPPER:?", "x" * 32 + "${"))
            for cls in set(known.values()):
                cls()


def test_dockerfile_variables_are_settings() -> None:
    named = set(re.findall(r"\bSCHEDULER_[A-Z_]+\b", DOCKERFILE))
    assert named, "the Dockerfile documents the ports' settings"
    assert named <= set(settings_env_names()), named - set(settings_env_names())


def test_ports_agree_with_the_settings(compose) -> None:
    ours = _our_services(compose)
    ingest_cls = load("scheduler_ingest.settings:IngestSettings")
    ingest_port = ours["ingest"]["environment"].get(
        "SCHEDULER_INGEST_PORT", ingest_cls.model_fields["port"].default
    )
    assert ours["ingest"]["ports"] == [f"{ingest_port}:{ingest_port}"]
    metrics_env = {
        "ingest": "SCHEDULER_INGEST_METRICS_PORT",
        "bucketer": "SCHEDULER_BUCKETER_METRICS_PORT",
        "releaser": "SCHEDULER_RELEASE_METRICS_PORT",
        "dispatcher": "SCHEDULER_DISPATCH_METRICS_PORT",
    }
    exposed = {str(ingest_port)}
    for name, key in metrics_env.items():
        port = str(ours[name]["environment"][key])
        assert ours[name]["expose"] == [port], name
        exposed.add(port)
    assert len(exposed) == 5, "every service on its own port, ingest's metrics on another"
    dockerfile_ports = set(re.search(r"^EXPOSE (.+)$", DOCKERFILE, re.M).group(1).split())
    assert dockerfile_ports == exposed


def test_the_ingest_healthcheck_uses_its_readiness_route(compose) -> None:
    check = " ".join(_our_services(compose)["ingest"]["healthcheck"]["test"])
    # The ops routes the gateway declares (`@app.get("/readyz", ...)` in app.py).
    source = (ROOT / "services/ingest/scheduler_ingest/app.py").read_text()
    declared = set(re.findall(r'@app\.get\(\s*"(/[a-z]+)"', source))
    assert {"/healthz", "/readyz"} <= declared
    used = re.findall(r"http://127\.0\.0\.1:(\d+)(/[a-z]+)", check)
    assert used == [(str(ours_port(compose)), "/readyz")]


def ours_port(compose: dict[str, Any]) -> int:
    return int(_our_services(compose)["ingest"]["environment"]["SCHEDULER_INGEST_PORT"])


def test_the_image_copies_files_that_exist_and_are_not_ignored() -> None:
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    for line in re.findall(r"^COPY (?!--from)(.+)$", DOCKERFILE, re.M):
        *sources, _dest = line.split()
        for source in sources:
            assert (ROOT / source).exists(), source
            assert source.rstrip("/") in allowed, f"{source} is excluded by .dockerignore"


def test_the_image_runs_as_non_root() -> None:
    users = re.findall(r"^USER (\S+)$", DOCKERFILE, re.M)
    assert users and users[-1].split(":")[0] not in ("0", "root")
    assert DOCKERFILE.count("FROM ") >= 2, "multi-stage"


def test_the_compose_scrape_config_targets_every_service(compose) -> None:
    config = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    targets = {
        group["labels"]["service"]: group["targets"]
        for job in config["scrape_configs"]
        for group in job["static_configs"]
    }
    ours = _our_services(compose)
    assert set(targets) == set(SERVICES)
    for name, [target] in targets.items():
        host, port = target.split(":")
        assert host == name
        # ingest's API port is published; its metrics port is only exposed, as the workers'
        assert ours[name]["expose"] == [port], name
