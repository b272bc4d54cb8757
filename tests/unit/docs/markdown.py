"""Fenced code blocks of the repository's markdown files, for tests that run the examples."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
_FENCE = re.compile(r"^```([\w-]*)[^\n]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)


@dataclass(frozen=True)
class Block:
    lang: str
    code: str
    line: int  # 1-based line of the opening fence


def blocks(relative: str, lang: str | None = None) -> list[Block]:
    text = (ROOT / relative).read_text(encoding="utf-8")
    found = [
        Block(m.group(1), m.group(2), text.count("\n", 0, m.start()) + 1)
        for m in _FENCE.finditer(text)
    ]
    return [b for b in found if lang is None or b.lang == lang]
