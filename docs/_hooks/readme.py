"""mkdocs hook: the site's home page is the README, so the two cannot drift.

``docs/index.md`` is a stub; this hook replaces its text by README.md with the links
rewritten for the site: ``docs/page.md`` → ``page.md`` (and ``docs/img/...`` → ``img/...``),
and a link to a file outside ``docs/`` (CHANGELOG.md) shown as the file's name.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

DOCS = Path(__file__).resolve().parents[1]
README = DOCS.parent / "README.md"


def home_page(readme: str) -> str:
    """README's text with its links made relative to ``docs/``; a link to a file outside
    ``docs/`` becomes its name in code."""
    text = readme.replace("](docs/", "](")

    def link(match: re.Match) -> str:
        text, target = match.group(1), match.group(2)
        if target.startswith(("http://", "https://", "#")) or (
                DOCS / target.split("#")[0]).is_file():
            return match.group(0)
        return f"{text} (`{target}` in the repository)"

    return re.sub(r"\[([^\]]+)\]\(([^)]+)\)", link, text)


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    del config, files
    if page.file.src_uri == "index.md":
        return home_page(README.read_text(encoding="utf-8"))
    return markdown
