"""Parsing the project's Python files in tests that read source (ast).

CPython 3.11 before 3.11.8 (gh-106905) raises "SystemError: AST constructor recursion depth
mismatch" when a garbage-collected object's finalizer parses Python while `ast.parse` builds
its tree: for example an asyncio task left pending by an earlier test, whose "Task was destroyed"
log formats a traceback, and 3.11's traceback module parses the failing line for its carets. A
CI run failed that way. The cyclic collector is held off while parsing, so no finalizer runs
in the middle.
"""

from __future__ import annotations

import ast
import gc


def parse(source: str, filename: str = "<unknown>") -> ast.Module:
    enabled = gc.isenabled()
    gc.disable()
    try:
        return ast.parse(source, filename)
    finally:
        if enabled:
            gc.enable()
