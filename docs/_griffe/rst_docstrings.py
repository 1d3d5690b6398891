"""A griffe extension for the docs site: wdchain's docstrings are written in the
reST dialect the doctests and IDEs read (``code``, :func:`name`, :math:`x`,
``.. math::`` blocks); mkdocstrings renders Markdown. This turns the first into the
second before rendering: code spans, cross-references to the API page, and math for
MathJax (pymdownx.arithmatex)."""

from __future__ import annotations

import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:py:)?(func|class|meth|attr|mod|data|exc):`~?\.?([\w.]+)`")
_MATH_ROLE = re.compile(r":math:`([^`]+)`")
_LITERAL = re.compile(r"``([^`]+)``")


def _math_blocks(text: str) -> str:
    """``.. math::`` and its indented body -> a ``$$ ... $$`` block."""
    lines, out, i = text.splitlines(), [], 0
    while i < len(lines):
        line = lines[i]
        if line.strip() == ".. math::":
            indent = len(line) - len(line.lstrip())
            body, i = [], i + 1
            while i < len(lines) and (not lines[i].strip() or
                                      len(lines[i]) - len(lines[i].lstrip()) > indent):
                body.append(lines[i].strip())
                i += 1
            pad = " " * indent
            out += [pad + "$$", *(pad + b for b in body if b), pad + "$$", ""]
            continue
        out.append(line)
        i += 1
    return "\n".join(out)


def to_markdown(text: str, public: set[str]) -> str:
    text = _math_blocks(text)
    text = _MATH_ROLE.sub(lambda m: f"${m.group(1)}$", text)

    def reference(match: re.Match) -> str:
        name = match.group(2)
        short = name.split(".")[-1]
        if short in public and not name.startswith(("optax.", "jax.", "nnx.", "flax.")):
            return f"[`{name}`][wdchain.{short}]"
        return f"`{name}`"

    text = _ROLE.sub(reference, text)
    return _LITERAL.sub(lambda m: f"`{m.group(1)}`", text)


class RstDocstrings(griffe.Extension):
    """Rewrites every docstring of the wdchain package before it is parsed."""

    def __init__(self) -> None:
        import wdchain

        self.public = set(wdchain.__all__)

    def on_instance(self, *, obj: Any, **kwargs: Any) -> None:
        docstring = getattr(obj, "docstring", None)
        if docstring is not None and docstring.value:
            docstring.value = to_markdown(docstring.value, self.public)
