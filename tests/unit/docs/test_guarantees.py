"""docs/GUARANTEES.md names, for every guarantee, the tests that drive its dangerous
interleavings. This keeps the table true: every row names a test, every named test exists."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from tests.support.python_source import parse

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[3]
TABLE = ROOT / "docs" / "GUARANTEES.md"
REQUIRED = {
    "Never lost",
    "Never early",
    "Cancel wins",
    "Effectively once to Kafka",
    "At least once over HTTP",
    "Read-your-writes",
    "Tenant isolation",
    "One tenant cannot stall another",
    "Bad input never blocks",
}
TEST_REF = re.compile(r"`(tests/[\w/]+\.py)::(test_\w+)`")


def rows(text: str) -> dict[str, list[tuple[str, str]]]:
    """Guarantee name (the bold text of the first cell) -> the tests its row names."""
    out: dict[str, list[tuple[str, str]]] = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        name = re.match(r"\*\*(.+?)\*\*", cells[0]) if len(cells) == 3 else None
        if name is not None:
            out[name.group(1)] = TEST_REF.findall(cells[2])
    return out


def functions_in(path: str) -> set[str]:
    tree = parse((ROOT / path).read_text(), path)
    return {
        node.name
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.name.startswith("test_")
    }


def missing_tests(table: dict[str, list[tuple[str, str]]]) -> list[str]:
    return [
        f"{name}: {path}::{function}"
        for name, tests in table.items()
        for path, function in tests
        if not (ROOT / path).is_file() or function not in functions_in(path)
    ]


def test_every_guarantee_has_a_row_naming_tests() -> None:
    table = rows(TABLE.read_text())
    assert set(table) >= REQUIRED, f"rows missing: {sorted(REQUIRED - set(table))}"
    empty = [name for name, tests in table.items() if not tests]
    assert empty == [], f"rows naming no test: {empty}"


def test_every_named_test_exists() -> None:
    missing = missing_tests(rows(TABLE.read_text()))
    assert missing == [], "tests named in docs/GUARANTEES.md that do not exist:\n" + "\n".join(
        missing
    )


def test_the_check_reports_a_renamed_test_and_a_missing_file() -> None:
    text = (
        "| **Never early** | timers | `tests/unit/docs/test_guarantees.py::test_renamed_away`,"
        " `tests/unit/gone.py::test_x`, `tests/unit/docs/test_guarantees.py::"
        "test_every_named_test_exists` |"
    )
    assert missing_tests(rows(text)) == [
        "Never early: tests/unit/docs/test_guarantees.py::test_renamed_away",
        "Never early: tests/unit/gone.py::test_x",
    ]
