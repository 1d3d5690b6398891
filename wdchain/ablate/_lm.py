"""A character-level transformer language model on text made locally: the ``transformer`` task.

The text is made here, never downloaded: the docstrings of modules of Python's standard
library (``inspect.getdoc`` of each module and its public functions and classes), as
printable ASCII. It therefore depends on the Python version; the sweep's ``run.json``
records a fingerprint of the data.

The model is a causal transformer in Flax NNX, pre-norm: token and position embeddings,
``layers`` blocks of (LayerNorm → causal self-attention → residual, LayerNorm → MLP →
residual), a final LayerNorm and a linear head. The loss is the next-token cross entropy
over every position; its metrics are the next-token error rate (``error``, what the
runner selects on) and the perplexity ``exp(loss)``.

The recipe is the usual one for transformers: a linear warmup over the first 5 % of the
steps then a cosine (``warmup_cosine(0.05)``), gradients clipped to global norm 1
(before the optimizer: an ``l2`` arm adds λθ after the clip). What is decayed is
:data:`DECAY_MASK`, ``wdchain.decay_mask_with(embeddings=False)``: every matrix of the
attention, the MLP and the head; not the biases, not the LayerNorm scales, and not the
token and position embedding tables (their rows are updated only when their token or
position occurs, so a decay would shrink rare tokens' rows most).
"""

from __future__ import annotations

import functools
import importlib
import inspect

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import wdchain
from wdchain.ablate._schedules import warmup_cosine
from wdchain.ablate._task import Task

MODULES = ("abc", "argparse", "base64", "bisect", "calendar", "collections", "contextlib",
           "copy", "csv", "dataclasses", "datetime", "decimal", "difflib", "enum", "fractions",
           "functools", "glob", "gzip", "hashlib", "heapq", "inspect", "io", "itertools",
           "json", "logging", "math", "operator", "os", "pathlib", "pickle", "pprint", "queue",
           "random", "re", "shlex", "shutil", "statistics", "string", "struct", "subprocess",
           "tempfile", "textwrap", "threading", "time", "typing", "unittest", "uuid",
           "warnings", "weakref", "zipfile")
FIRST, LAST = 32, 126  # printable ASCII; every other character becomes "?"
VOCAB = LAST - FIRST + 2  # the printable characters, and "\n"


@functools.cache
def stdlib_text(modules: tuple[str, ...] = MODULES) -> str:
    """The docstrings of ``modules`` and of their public functions and classes, joined."""
    parts = []
    for name in modules:
        module = importlib.import_module(name)
        parts.append(inspect.getdoc(module) or "")
        for attribute, value in sorted(vars(module).items()):
            if attribute.startswith("_") or not (inspect.isfunction(value) or
                                                 inspect.isclass(value)):
                continue
            if getattr(value, "__module__", None) != module.__name__:
                continue
            parts.append(inspect.getdoc(value) or "")
    return "\n\n".join(part for part in parts if part)


def encode(text: str) -> np.ndarray:
    """Characters as integers in [0, VOCAB): printable ASCII, "\\n" and "?" for the rest.

    Example:
      >>> encode("a\\n~é").tolist() == [ord("a") - FIRST, VOCAB - 1, ord("~") - FIRST,
      ...                               ord("?") - FIRST]
      True
    """
    codes = np.frombuffer(text.encode("ascii", "replace"), np.uint8).astype(np.int32)
    newline = codes == ord("\n")
    codes = np.where((codes < FIRST) | (codes > LAST), ord("?"), codes) - FIRST
    return np.where(newline, VOCAB - 1, codes).astype(np.int32)


def sequences(codes: np.ndarray, context: int) -> tuple[np.ndarray, np.ndarray]:
    """Non-overlapping windows: inputs ``codes[i : i + context]``, targets shifted by one.

    Example:
      >>> x, y = sequences(np.arange(10), 4)
      >>> x.tolist(), y.tolist()
      ([[0, 1, 2, 3], [4, 5, 6, 7]], [[1, 2, 3, 4], [5, 6, 7, 8]])
    """
    count = (len(codes) - 1) // context
    x = codes[: count * context].reshape(count, context)
    y = codes[1: count * context + 1].reshape(count, context)
    return x, y


class Block(nnx.Module):
    """Pre-norm transformer block: causal self-attention, then an MLP, each residual."""

    def __init__(self, width: int, heads: int, rngs: nnx.Rngs):
        self.norm1 = nnx.LayerNorm(width, rngs=rngs)
        self.attention = nnx.MultiHeadAttention(heads, width, decode=False, rngs=rngs)
        self.norm2 = nnx.LayerNorm(width, rngs=rngs)
        self.up = nnx.Linear(width, 4 * width, rngs=rngs)
        self.down = nnx.Linear(4 * width, width, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        causal = nnx.make_causal_mask(x[..., 0])
        x = x + self.attention(self.norm1(x), mask=causal)
        return x + self.down(nnx.gelu(self.up(self.norm2(x))))


class TransformerLM(nnx.Module):
    """A causal character-level transformer: ``(batch, context)`` codes to logits."""

    def __init__(self, rngs: nnx.Rngs, *, width: int = 64, layers: int = 2, heads: int = 4,
                 context: int = 32, vocab: int = VOCAB):
        self.tokens = nnx.Embed(vocab, width, rngs=rngs)
        self.positions = nnx.Embed(context, width, rngs=rngs)
        self.blocks = nnx.List([Block(width, heads, rngs) for _ in range(layers)])
        self.norm = nnx.LayerNorm(width, rngs=rngs)
        self.head = nnx.Linear(width, vocab, rngs=rngs)

    def __call__(self, codes: jax.Array) -> jax.Array:
        x = self.tokens(codes) + self.positions(jnp.arange(codes.shape[-1]))
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x))


def next_token_loss(model: nnx.Module, batch: tuple[jax.Array, jax.Array]
                    ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Cross entropy of every next character; the error rate and the perplexity."""
    x, y = batch
    logits = model(x)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    error = jnp.mean(jnp.argmax(logits, axis=-1) != y)
    return loss, {"error": error, "perplexity": jnp.exp(loss)}


DECAY_MASK = wdchain.decay_mask_with(embeddings=False)
"""Decay the matrices; not biases, LayerNorm scales or the embedding tables."""


def make_task(epochs: int = 3, *, width: int = 64, layers: int = 2, context: int = 32,
              batch_size: int = 32, characters: int | None = None,
              modules: tuple[str, ...] = MODULES,
              name: str = "stdlib docstrings (chars)") -> Task:
    """The language-model Task: the first ``characters`` of the text (all of it: None)
    cut 80 / 10 / 10 into contiguous blocks (so no window of one split overlaps another),
    the recipe of the module. The model takes ``width`` (``--widths``)."""
    codes = encode(stdlib_text(tuple(modules)))
    if characters is not None:
        codes = codes[:characters]
    cut1, cut2 = int(0.8 * len(codes)), int(0.9 * len(codes))
    train = sequences(codes[:cut1], context)
    validation = sequences(codes[cut1:cut2], context)
    test = sequences(codes[cut2:], context)

    def model(rngs: nnx.Rngs, width: int = width) -> TransformerLM:
        return TransformerLM(rngs, width=width, layers=layers, context=context)

    return Task(model, train, test, validation=validation, loss=next_token_loss,
                batch_size=batch_size, epochs=epochs, name=name,
                model_name=f"transformer {layers}x{width}, context {context}",
                schedule=warmup_cosine(0.05), clip_norm=1.0, mask=DECAY_MASK)
