"""tests/support/python_source.py: a parse that a finalizer parsing in the middle cannot break."""

from __future__ import annotations

import ast
import gc
from collections.abc import Callable, Iterator

import pytest

from tests.support.python_source import parse

pytestmark = pytest.mark.unit

SOURCE = "\n".join(
    f"def f{i}(a):\n    return [(a, {{'k': (a + {i}) * 2}}) for a in range({i})]"
    for i in range(200)
)


class ParsesWhenCollected:
    """Garbage in a reference cycle whose finalizer parses, as a destroyed task's log does."""

    def __init__(self) -> None:
        self.me = self

    def __del__(self) -> None:
        ast.parse("x = (1 + 2) * 3")


@pytest.fixture
def collector_at_every_allocation() -> Iterator[None]:
    old = gc.get_threshold()
    gc.set_threshold(1)
    try:
        yield
    finally:
        gc.set_threshold(*old)
        gc.collect()


def parse_with_garbage_about(parser: Callable[[str], ast.Module]) -> None:
    for _ in range(20):
        ParsesWhenCollected()
        parser(SOURCE)


def test_a_finalizer_that_parses_cannot_break_a_parse(collector_at_every_allocation: None) -> None:
    """With `ast.parse` in place of `parse` this raises SystemError on Python 3.11.7 (CI's)."""
    parse_with_garbage_about(parse)
    assert gc.isenabled()
