"""The documentation is self-contained: README.md and docs/*.md link only to files of this
repository that exist (and to headings that exist in them), README links every page of docs/,
and no page points the reader at notes or dates a user of the repository does not have."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

_FENCE = re.compile(r"^(```|~~~).*?^\1", re.M | re.S)
_CODE_SPAN = re.compile(r"(`+).+?\1", re.S)
_INLINE = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_REFERENCE = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$", re.M)
_HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.M)
_EXTERNAL = ("http://", "https://", "mailto:")
# Wording that sends the reader somewhere outside the repository, or to a moment in time.
_FORBIDDEN = ("../shared", "DESIGN.md", "issue notes", "today's code", "works today", "this session")


def _prose(text: str) -> str:
    """The text without code blocks and code spans, where link syntax is only an example."""
    return _CODE_SPAN.sub("", _FENCE.sub("", text))


def _links(page: Path) -> list[str]:
    prose = _prose(page.read_text(encoding="utf-8"))
    return _INLINE.findall(prose) + _REFERENCE.findall(prose)


def _anchor(heading: str) -> str:
    """GitHub's id for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).replace("`", "").lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    text = _FENCE.sub("", page.read_text(encoding="utf-8"))
    return {_anchor(h) for h in _HEADING.findall(text)}


def _problems(page: Path, root: Path = ROOT) -> list[str]:
    problems = []
    for target in _links(page):
        if target.startswith(_EXTERNAL):
            continue
        path, _, fragment = target.partition("#")
        if path.startswith("/"):
            resolved = (root / path.lstrip("/")).resolve()
        else:
            resolved = (page.parent / path).resolve() if path else page
        if not resolved.is_relative_to(root):
            problems.append(f"{target}: outside the repository")
        elif not resolved.exists():
            problems.append(f"{target}: no such file")
        elif fragment and resolved.suffix == ".md" and fragment not in _anchors(resolved):
            problems.append(f"{target}: no heading #{fragment} in {resolved.relative_to(root)}")
    return problems


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_links_stay_inside_the_repository_and_resolve(page: Path) -> None:
    assert _problems(page) == []


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_pointers_to_notes_or_dates_outside_the_repository(page: Path) -> None:
    text = page.read_text(encoding="utf-8")
    assert [w for w in _FORBIDDEN if w.lower() in text.lower()] == []


def test_readme_links_every_docs_page() -> None:
    linked = {(ROOT / t.partition("#")[0]).resolve() for t in _links(ROOT / "README.md")}
    missing = [p.name for p in sorted((ROOT / "docs").glob("*.md")) if p.resolve() not in linked]
    assert missing == []


def test_the_checker_catches_what_it_is_for(tmp_path: Path) -> None:
    """The checks above would pass vacuously if the link patterns matched nothing."""
    root = tmp_path.resolve()
    (root / "docs").mkdir()
    (root / "docs" / "api.md").write_text("# API\n\n## Errors\n", encoding="utf-8")
    page = root / "docs" / "probe.md"
    page.write_text(
        "# Probe\n[out](../../shared/DESIGN.md) [gone](missing.md) [ok](api.md#errors)"
        " [bad anchor](api.md#no-such-heading) [self](#probe) [web](https://example.com/x)\n"
        "```\n[in code](../nowhere.md)\n```\n",
        encoding="utf-8",
    )
    assert _problems(page, root) == [
        "../../shared/DESIGN.md: outside the repository",
        "missing.md: no such file",
        "api.md#no-such-heading: no heading #no-such-heading in docs/api.md",
    ]
