"""Every relative link of the documentation points at a file that exists, and every #anchor at a heading of it.

The pages: README.md, every docs/*.md, benchmarks/README.md and CHANGELOG.md. Links are Markdown links and images,
`[text](target)` and `![alt](target)`, outside code blocks and code spans; links with a scheme (https:, mailto:) are
not followed. An anchor is checked against the heading ids a code host derives from the target page's headings
(GitHub's rule: lower case, every character but letters, digits, spaces, `-` and `_` dropped, spaces to `-`, a
repeated id numbered `-1`, `-2`, ...).
"""

import re
from pathlib import Path

import pytest

from helpers import ROOT

PAGES = ["README.md", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md")),
         "benchmarks/README.md", "CHANGELOG.md"]
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(([^()\s]+)(?:\s+\"[^\"]*\")?\)")


def prose(text: str) -> str:
    """`text` without its fenced code blocks and code spans (whose brackets are not links)."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    return re.sub(r"(`+).*?\1", "", text, flags=re.S)


def heading_ids(path: Path) -> set[str]:
    """The anchors a code host gives the headings of the Markdown file `path`."""
    text = re.sub(r"^```.*?^```", "", path.read_text(), flags=re.S | re.M)
    ids: set[str] = set()
    for title in re.findall(r"^#{1,6}\s+(.+?)\s*#*\s*$", text, flags=re.M):
        slug = re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")
        unique, count = slug, 0
        while unique in ids:
            count += 1
            unique = f"{slug}-{count}"
        ids.add(unique)
    return ids


def links(page: str) -> list[str]:
    """The relative link targets of `page`, in page order."""
    return [target for target in LINK.findall(prose((ROOT / page).read_text()))
            if not re.match(r"[a-z][a-z0-9+.-]*:", target)]


def broken_links(page: str) -> list[str]:
    """The links of `page` whose file does not exist, or whose #anchor names no heading of that file."""
    broken = []
    for target in links(page):
        file_part, _, anchor = target.partition("#")
        path = ((ROOT / page).parent / file_part).resolve() if file_part else ROOT / page
        if not path.exists() or ROOT not in path.parents and path != ROOT:
            broken.append(f"{target} (no such file)")
        elif anchor and (path.suffix != ".md" or anchor not in heading_ids(path)):
            broken.append(f"{target} (no heading #{anchor} in {path.relative_to(ROOT)})")
    return broken


@pytest.mark.parametrize("page", PAGES)
def test_every_relative_link_resolves(page):
    assert broken_links(page) == [], f"{page}: broken links"


def test_links_are_found():
    """The link pattern still finds the README's links to the manual (else every page would pass, checking nothing)."""
    assert {"docs/README.md", "docs/training.md#python-train_vaepy--genvision-train-vae-vae-training",
            "samples/dcgan_mnist5k.png", "CHANGELOG.md"} <= set(links("README.md"))


def test_heading_ids_follow_the_code_host():
    """The slug rule on headings of the kinds the pages use (code spans, slashes, colons, brackets, repeats)."""
    page = ROOT / "docs" / "training.md"
    assert {"python-train_vaepy--genvision-train-vae-vae-training", "experiment-tracking---report-to",
            "priors"} <= heading_ids(page)
    assert "hugging-face-datasets-hfpathsplit" in heading_ids(ROOT / "docs" / "datasets.md")
