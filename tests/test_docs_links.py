"""The README stays short enough to read to the end, and no relative link in it or in docs/*.md is broken."""
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
#: ``[text](target)`` or ``![alt](target "title")``; the target ends at whitespace or ``)``
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def relative_links(text: str) -> list[str]:
    """The link targets of a Markdown text that point into the repository (no URL, no bare ``#anchor``)."""
    targets = [target.split("#")[0] for target in LINK.findall(text)]
    return [target for target in targets if target and not re.match(r"[a-z][a-z0-9+.-]*:", target)]


def test_relative_links_are_found_and_urls_and_anchors_skipped():
    text = ("see [a](docs/a.md#part), ![b](img/b.png \"title\"), [c](https://x.org/c.md), [d](#results), "
            "[e](mailto:someone@example.org) and [f](../g.md)")
    assert relative_links(text) == ["docs/a.md", "img/b.png", "../g.md"]


def test_the_readme_has_at_most_300_lines():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 300, f"README.md has {len(lines)} lines; move details to docs/ and link them"


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(ROOT)))
def test_every_relative_link_points_to_an_existing_file(page):
    missing = [target for target in relative_links(page.read_text(encoding="utf-8"))
               if not (page.parent / target).exists()]
    assert not missing, f"{page.relative_to(ROOT)} links to files that do not exist: {missing}"
