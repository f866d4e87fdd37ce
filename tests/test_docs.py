"""README.md and docs/*.md: every relative link resolves, and the README fits on a page.

A link `[text](target)` or `![alt](target)` resolves when its file exists (relative to the page that
links it) and its `#anchor`, if any, names a heading of the target page as GitHub slugs it. Links to
http(s): and mailto: are not followed; links inside ``` fences and inline code are not links.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from functools import cache
from pathlib import Path
from urllib.parse import unquote

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
README_MAX_LINES = 250
NOT_FOLLOWED = ("http://", "https://", "mailto:")

FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
HEADING = re.compile(r"^ {0,3}#{1,6}\s+(.*?)(?:\s+#+)?\s*$")
INLINE_CODE = re.compile(r"(`+).+?\1")
# [text](target) or ![alt](target "title"); the text may hold one level of brackets ([`a[0]`](x.md))
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^\s)>]*)>?(?:\s+\"[^\"]*\")?\s*\)")


def prose_lines(text: str) -> list[str]:
    """The page's lines outside fenced code blocks (``` or ~~~, closed by a fence at least as long)."""
    lines, fence = [], None
    for line in text.splitlines():
        marker = FENCE.match(line)
        if fence is None and marker:
            fence = marker.group(1)
        elif fence is not None and marker and marker.group(1).startswith(fence) and not line[marker.end() :].strip():
            fence = None
        elif fence is None:
            lines.append(line)
    return lines


def github_slug(heading: str) -> str:
    """GitHub's anchor for a heading: its rendered text, lowercased, with every character that is not a
    letter, digit, space, hyphen or underscore dropped and each space made a hyphen."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading: its text
    text = re.sub(r"<[^>]+>|[`*]", "", text)  # HTML tags, code and emphasis markers
    return re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")


def anchors_in(text: str) -> set[str]:
    """Every heading's anchor; the second heading of the same slug gets -1, the third -2, ..."""
    anchors, seen = set(), Counter()
    for line in prose_lines(text):
        if heading := HEADING.match(line):
            slug = github_slug(heading.group(1))
            anchors.add(f"{slug}-{seen[slug]}" if seen[slug] else slug)
            seen[slug] += 1
    return anchors


def links_in(text: str) -> list[str]:
    """The target of every Markdown link and image outside code."""
    return [link.group(1) for line in prose_lines(text) for link in LINK.finditer(INLINE_CODE.sub("", line))]


@cache
def anchors_of(page: Path) -> set[str]:
    return anchors_in(page.read_text(encoding="utf-8"))


def broken_links(page: Path) -> list[str]:
    broken = []
    for target in links_in(page.read_text(encoding="utf-8")):
        if target.startswith(NOT_FOLLOWED):
            continue
        path, _, anchor = target.partition("#")
        linked = (page.parent / unquote(path)).resolve() if path else page
        if not linked.exists():
            broken.append(f"({target}): no such file {os.path.relpath(linked, REPO)}")
        elif anchor and linked.suffix == ".md" and unquote(anchor) not in anchors_of(linked):
            broken.append(f"({target}): no heading with the anchor #{anchor} in {linked.name}")
    return broken


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.relative_to(REPO).as_posix())
def test_every_relative_link_resolves(page):
    assert broken_links(page) == []


def test_the_readme_fits_on_a_page():
    lines = len((REPO / "README.md").read_text(encoding="utf-8").splitlines())
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; move some to docs/"


@pytest.mark.parametrize(
    ("heading", "slug"),
    [
        ("Set up and run", "set-up-and-run"),
        ("The smallest cell at 99.9%, over seeds", "the-smallest-cell-at-999-over-seeds"),
        (
            "optuna-dashboard and `sweep report` beyond 10,000 trials",
            "optuna-dashboard-and-sweep-report-beyond-10000-trials",
        ),
        ("Reliability, as tested (every `make test`)", "reliability-as-tested-every-make-test"),
        ("mean +- sd of `train_seconds`", "mean---sd-of-train_seconds"),
        ("See [the guide](docs/guide.md)", "see-the-guide"),
    ],
)
def test_headings_slug_as_on_github(heading, slug):
    assert github_slug(heading) == slug


def test_anchors_number_repeated_headings_and_skip_code_blocks():
    text = "# Notes\n\n## Setup\n\n```bash\n# not a heading\n```\n\n## Setup ##\n\n### Setup\n"
    assert anchors_in(text) == {"notes", "setup", "setup-1", "setup-2"}


def test_links_in_code_are_not_links():
    text = '[a](a.md) and `[b](b.md)` and ![c](c.png "C")\n\n```md\n[d](d.md)\n```\n~~~\n[e](e.md)\n~~~\n'
    assert links_in(text) == ["a.md", "c.png"]


def test_every_shipped_spec_and_recipe_is_in_the_specs_table():
    """docs/specs.md has one table of the shipped specs and recipes: every studies/*.yaml and
    studies/recipes/*.yaml is a row of it, named by its path in backticks."""
    lines = prose_lines((REPO / "docs" / "specs.md").read_text(encoding="utf-8"))
    tables, rows = [], []
    for line in [*lines, ""]:
        if line.lstrip().startswith("|"):
            rows.append(line)
        elif rows:
            tables.append(rows)
            rows = []
    assert len(tables) == 1, f"docs/specs.md should hold one table, not {len(tables)}"
    shipped = sorted([*(REPO / "studies").glob("*.yaml"), *(REPO / "studies" / "recipes").glob("*.yaml")])
    assert shipped, "no studies/*.yaml found"
    paths = [path.relative_to(REPO).as_posix() for path in shipped]
    missing = [path for path in paths if not any(f"`{path}`" in row for row in tables[0])]
    assert missing == [], f"docs/specs.md's table lacks {', '.join(missing)}"
