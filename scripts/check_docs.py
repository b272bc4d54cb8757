#!/usr/bin/env python3
"""Check the markdown files tracked by git: relative links and #anchors resolve inside the
repository, and no absolute path of a development machine (under /home, /tmp, /Users and the
like) is named. Run by `make lint`; exits 1 with one line per problem.

    .venv/bin/python scripts/check_docs.py [--root DIR] [FILE.md ...]

Links to public pages (https://...) are not fetched. Anchors follow GitHub's rule: the heading
text, lowercase, without punctuation other than `-` and `_`, spaces as `-`, a repeated heading
with `-1`, `-2`, ... appended.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

FENCE = re.compile(r"^\s{0,3}(```|~~~)")
HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
INLINE_CODE = re.compile(r"(`+)(?:(?!\1).)+?\1")
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$")
HTML_ANCHOR = re.compile(r"<a\s+(?:name|id)=\"([^\"]+)\"", re.IGNORECASE)
# A path under a directory that only exists on some machine: /home/x, /tmp/x, /Users/x, ...
LOCAL_PATH = re.compile(
    r"(?<![\w.~%-])/(?:work|home|Users|tmp|root|mnt|private/var|var/folders)/[\w.~-]"
)
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


@dataclass(frozen=True)
class Problem:
    file: str
    line: int
    text: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.text}"


def slug(heading: str) -> str:
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # links: their text
    text = re.sub(r"<[^>]+>", "", text).replace("`", "")
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return text.replace(" ", "-")


def prose_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) outside fenced code blocks."""
    out: list[tuple[int, str]] = []
    fence: str | None = None
    for number, line in enumerate(text.splitlines(), 1):
        match = FENCE.match(line)
        if match:
            if fence is None:
                fence = match.group(1)
            elif match.group(1) == fence:
                fence = None
            continue
        if fence is None:
            out.append((number, line))
    return out


def anchors(text: str) -> set[str]:
    found: set[str] = set()
    seen: dict[str, int] = {}
    for _, line in prose_lines(text):
        match = HEADING.match(line)
        if match:
            base = slug(match.group(2))
            count = seen.get(base, 0)
            seen[base] = count + 1
            found.add(base if count == 0 else f"{base}-{count}")
        found.update(HTML_ANCHOR.findall(line))
    return found


def link_targets(text: str) -> list[tuple[int, str]]:
    out: list[tuple[int, str]] = []
    for number, line in prose_lines(text):
        bare = INLINE_CODE.sub("", line)
        out.extend((number, target) for target in LINK.findall(bare))
        reference = REFERENCE.match(bare)
        if reference:
            out.append((number, reference.group(1)))
    return out


def check_file(root: Path, path: Path, tracked: set[str]) -> list[Problem]:
    rel = path.relative_to(root).as_posix()
    text = path.read_text(encoding="utf-8")
    problems = [
        Problem(rel, number, f"absolute local path {match.group(0)}... (not in a clone)")
        for number, line in enumerate(text.splitlines(), 1)
        for match in LOCAL_PATH.finditer(line)
    ]
    for number, target in link_targets(text):
        if not target:
            problems.append(Problem(rel, number, "empty link"))
            continue
        if SCHEME.match(target):
            if not target.lower().startswith(("https:", "http:", "mailto:")):
                problems.append(Problem(rel, number, f"link to {target}: not a public page"))
            continue
        file_part, _, fragment = target.partition("#")
        if file_part.startswith("/"):
            problems.append(Problem(rel, number, f"link {target}: use a relative path"))
            continue
        resolved = (path.parent / unquote(file_part)).resolve() if file_part else path
        try:
            target_rel = resolved.relative_to(root).as_posix()
        except ValueError:
            problems.append(Problem(rel, number, f"link {target} leaves the repository"))
            continue
        is_dir = any(t.startswith(target_rel.rstrip("/") + "/") for t in tracked)
        if target_rel not in tracked and not is_dir and file_part:
            problems.append(Problem(rel, number, f"link {target}: no such file in the repository"))
            continue
        if (
            fragment
            and resolved.suffix == ".md"
            and resolved.is_file()
            and unquote(fragment) not in anchors(resolved.read_text(encoding="utf-8"))
        ):
            problems.append(Problem(rel, number, f"link {target}: no heading #{fragment}"))
    return problems


def tracked_files(root: Path) -> set[str]:
    out = subprocess.run(
        ["git", "ls-files", "-z"],  # noqa: S607 - git from PATH, fixed arguments
        cwd=root,
        capture_output=True,
        check=True,
    )
    return {name for name in out.stdout.decode().split("\0") if name}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parent.parent)
    parser.add_argument("files", nargs="*", type=Path, help="default: every tracked *.md")
    args = parser.parse_args(argv)
    root = args.root.resolve()
    tracked = tracked_files(root)
    files = [f.resolve() for f in args.files] or [
        root / name for name in sorted(tracked) if name.endswith(".md")
    ]
    problems = [p for f in files if f.is_file() for p in check_file(root, f, tracked)]
    for problem in problems:
        print(problem)
    print(f"check_docs: {len(files)} markdown file(s), {len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
