"""scripts/check_docs.py: finds broken relative links and anchors, links out of the repository
and absolute local paths in a deliberately broken fixture; passes on good markdown and on the
repository itself."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from .markdown import ROOT

pytestmark = pytest.mark.unit


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("check_docs", ROOT / "scripts/check_docs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["check_docs"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


check_docs = _script()

GOOD = """# Guide

See [the API](docs/API.md), [its errors](docs/API.md#errors-and-tokens), [a dir](docs/),
[here](#setup-step-2), [again](#guide-1), ![a plot](docs/plot.png), <https://example.com/x>,
[upstream](https://kafka.apache.org/documentation/), `[not a link](../../nowhere.md)`.

## Setup: step 2

# Guide

```bash
ls ../../outside/ARCHITECTURE.md   # in a code block: not a link
```

[ref]: docs/API.md#console-console
"""

API = """# API

## Errors and tokens

## Console (`/console`)
"""

BROKEN = """# Broken

Read [the architecture](../outside/ARCHITECTURE.md) and [the contract](../../../outside/API.md).
[Missing file](docs/NOPE.md), [missing anchor](docs/API.md#no-such-heading),
[missing local anchor](#nowhere), [absolute](/docs/API.md), [file](file:///etc/hosts).
The jars are under /Users/dev/kafka and logs in /home/dev/logs.

```
cd /tmp/build-1234
```
"""


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    (tmp_path / "docs").mkdir()
    (tmp_path / "README.md").write_text(GOOD)
    (tmp_path / "docs/API.md").write_text(API)
    (tmp_path / "docs/plot.png").write_bytes(b"\x89PNG")
    (tmp_path / "BROKEN.md").write_text(BROKEN)
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run(["git", "add", "."], cwd=tmp_path, check=True)
    return tmp_path


def test_good_markdown_passes(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert check_docs.main(["--root", str(repo), str(repo / "README.md")]) == 0
    assert "0 problem(s)" in capsys.readouterr().out


def test_the_broken_fixture_fails_with_each_problem(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert check_docs.main(["--root", str(repo)]) == 1
    out = capsys.readouterr().out
    expected = [
        "BROKEN.md:3: link ../outside/ARCHITECTURE.md leaves the repository",
        "BROKEN.md:3: link ../../../outside/API.md leaves the repository",
        "BROKEN.md:4: link docs/NOPE.md: no such file in the repository",
        "BROKEN.md:4: link docs/API.md#no-such-heading: no heading #no-such-heading",
        "BROKEN.md:5: link #nowhere: no heading #nowhere",
        "BROKEN.md:5: link /docs/API.md: use a relative path",
        "BROKEN.md:5: link to file:///etc/hosts: not a public page",
        "BROKEN.md:6: absolute local path /Users/d",
        "BROKEN.md:6: absolute local path /home/d",
        "BROKEN.md:9: absolute local path /tmp/b",
    ]
    for line in expected:
        assert line in out, (line, out)
    assert "README.md" not in out
    assert "10 problem(s)" in out


def test_github_anchors() -> None:
    assert check_docs.slug("Console (`/console`)") == "console-console"
    assert check_docs.slug("The release path: claim, index, fencing") == (
        "the-release-path-claim-index-fencing"
    )
    assert check_docs.slug("kill -9 of the [dispatcher](x.md)") == "kill--9-of-the-dispatcher"
    assert check_docs.anchors("# A\n## A\n```\n# not a heading\n```\n") == {"a", "a-1"}


def test_the_repository_docs_pass() -> None:
    out = subprocess.run(
        [str(ROOT / ".venv/bin/python"), "scripts/check_docs.py"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stdout
