"""The public API: documented, importable without torch, and the README's code runs."""

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import wdchain

README = (Path(__file__).parent.parent / "README.md").read_text()


DOCS = Path(__file__).parent.parent / "docs"


def test_the_api_page_lists_exactly_the_public_names():
    """docs/api.md renders each public name from its docstring (``::: wdchain.name``)."""
    listed = re.findall(r"(?m)^::: wdchain\.(\w+)$", (DOCS / "api.md").read_text())
    assert len(listed) == len(set(listed)), "a name is listed twice"
    assert set(listed) == set(wdchain.__all__), (
        f"missing from docs/api.md: {sorted(set(wdchain.__all__) - set(listed))}; "
        f"not public: {sorted(set(listed) - set(wdchain.__all__))}"
    )


def test_every_docs_page_is_in_the_site_and_every_readme_link_resolves():
    config = (DOCS.parent / "mkdocs.yml").read_text()
    in_nav = set(re.findall(r"(?m):\s*(\S+\.md)\s*$", config))
    pages = {p.name for p in DOCS.glob("*.md")}
    assert pages == in_nav, f"not in mkdocs.yml's nav: {sorted(pages - in_nav)}"
    for target in re.findall(r"\]\((docs/[^)#]+)", README):
        assert (DOCS.parent / target).exists(), target


def test_the_package_imports_and_works_without_torch():
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import jax.numpy as jnp, wdchain\n"
        "tx = wdchain.adamw(lr=0.1)\n"
        "p = jnp.ones(2); print(tx.update(p, tx.init(p), p)[0])\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_the_readme_adam_and_adamw_chains_are_the_aliases():
    block = re.search(r"```python\n(import wdchain\n.*?)```", README, re.S).group(1)
    namespace: dict = {}
    exec(block, namespace)
    params = {"w": jnp.linspace(-1.0, 1.0, 6).reshape(2, 3)}
    pairs = [(namespace["adam"], wdchain.adam(weight_decay=1e-2)),
             (namespace["adamw"], wdchain.adamw(weight_decay=1e-2))]
    results = []
    for chained, alias in pairs:
        outs = []
        for tx in (chained, alias):
            state, p = tx.init(params), params
            for t in range(5):
                grads = jax.tree.map(lambda x, t=t: jnp.sin(x * (t + 1)), p)
                updates, state = tx.update(grads, state, p)
                p = jax.tree.map(lambda a, b: a + b, p, updates)
            outs.append(p["w"])
        np.testing.assert_array_equal(outs[0], outs[1])
        results.append(outs[0])
    assert not np.array_equal(results[0], results[1])  # L2 and decoupled differ


def test_the_home_page_is_the_readme() -> None:
    """docs/index.md is a stub: the site's home page is README.md (links rewritten by the
    mkdocs hook), so the two cannot drift (issue 20 §4)."""
    spec = importlib.util.spec_from_file_location("readme_hook", DOCS / "_hooks" / "readme.py")
    assert spec is not None and spec.loader is not None
    hook = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hook)
    page = hook.home_page(README)
    assert "](docs/" not in page
    assert "[API reference](api.md)" in page and "(`CHANGELOG.md` in the repository)" in page
    assert page.count("\n") == README.count("\n")
    stub = (DOCS / "index.md").read_text()
    assert stub.startswith("<!--") and stub.rstrip().endswith("-->")
    assert "hooks:\n  - docs/_hooks/readme.py" in (DOCS.parent / "mkdocs.yml").read_text()
