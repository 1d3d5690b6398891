"""The packed path: a tree of many leaves held as a few flat buffers.

A step of a wdchain optimizer on a tree of n leaves is n small kernels and n
arguments per array of the state; on a tree of thousands of leaves, launching them
costs more than the arithmetic. A :class:`PackedLayout` maps the tree to one flat
buffer per (dtype, decayed?) group, so every optimizer sees a dict of a few large
leaves and its step is a few fused passes, whatever the number of parameters.

Packing is static: the layout (which leaf sits at which offset) is fixed when it is
built, so ``unpack`` is static slices and reshapes, differentiable, and the
gradient of a loss of ``unpack(flat)`` with respect to ``flat`` is itself flat.
The optimizer is unchanged; the decay mask becomes one static bool per buffer
(``layout.mask``), so there is no per-element mask array.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from wdchain import _tree

_WHERE = "PackedLayout"


@dataclasses.dataclass(frozen=True)
class _Segment:
    """Where one leaf lives: its buffer, offset, shape and path (for messages)."""

    group: str
    offset: int
    shape: tuple[int, ...]
    path: str

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))


def _group_name(dtype: Any, decayed: bool | None) -> str:
    """``"float32"`` without a mask; ``"float32/decay"``, ``"float32/no_decay"`` with one."""
    name = jnp.dtype(dtype).name
    if decayed is None:
        return name
    return f"{name}/{'decay' if decayed else 'no_decay'}"


def _static_bool(path: str, value: Any) -> bool:
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise TypeError(
        f"{_WHERE}.from_params: the mask at {path} is {value!r}; a packed layout needs "
        "Python booleans (the buffers are laid out when the layout is built). Build the "
        "mask from the params' shapes or names, e.g. lambda p: jax.tree.map(lambda x: "
        "x.ndim > 1, p)."
    )


@dataclasses.dataclass(frozen=True)
class PackedLayout:
    """A static map from a pytree of arrays to a dict of flat buffers.

    Leaves are grouped by dtype and, when a mask is given, by whether they are
    decayed; each group is one 1-D buffer, its leaves laid end to end in tree order.
    Build one with :meth:`from_params`; it is immutable and hashable, so it can be
    closed over by (or passed statically to) a jitted function.

    Attributes:
      mask: None (no mask given), or a dict with one static bool per buffer: pass it
        as the optimizer's ``mask``.
      sizes: number of elements of each buffer.
      dtypes: dtype of each buffer.

    Example:
      >>> import jax.numpy as jnp
      >>> import wdchain
      >>> params = {"w": jnp.ones((2, 3)), "b": jnp.zeros(3), "step": jnp.array(0)}
      >>> layout = wdchain.PackedLayout.from_params(params, mask={"w": True, "b": False,
      ...                                                         "step": False})
      >>> layout.sizes
      {'float32/decay': 6, 'float32/no_decay': 3, 'int32': 1}
      >>> layout.mask
      {'float32/decay': True, 'float32/no_decay': False, 'int32': False}
      >>> flat = layout.pack(params)
      >>> tx = wdchain.adamw(lr=0.1, weight_decay=0.5, mask=layout.mask)
      >>> updates, _ = tx.update(layout.pack(params), tx.init(flat), flat)
      >>> layout.unpack(updates)["w"].shape
      (2, 3)
    """

    treedef: Any
    segments: tuple[_Segment, ...]
    group_dtypes: tuple[tuple[str, str], ...]
    group_decay: tuple[tuple[str, bool], ...] | None

    @classmethod
    def from_params(cls, params: Any, mask: Any = None) -> PackedLayout:
        """The layout of ``params``: one buffer per dtype (and per mask value).

        Args:
          params: a pytree of arrays (or anything ``jnp.asarray`` takes). Only
            shapes and dtypes are read, so ``jax.ShapeDtypeStruct`` leaves work too.
          mask: None, or which leaves to decay, as the optimizers' ``mask``: a pytree
            of Python booleans that is a prefix of ``params``, or a callable of the
            params returning one. Non-float leaves are never decayed and are grouped
            by dtype only.

        Returns:
          A :class:`PackedLayout`.
        """
        leaves_with_paths, treedef_ = jax.tree_util.tree_flatten_with_path(params)
        treedef: Any = treedef_  # jaxlib's PyTreeDef has no type stubs
        masks = _tree.resolve_mask(f"{_WHERE}.from_params", mask, params)
        mask_leaves = None if masks is None else treedef.flatten_up_to(masks)
        offsets: dict[str, int] = {}
        dtypes: dict[str, str] = {}
        decay: dict[str, bool] = {}
        segments = []
        for i, (path, leaf) in enumerate(leaves_with_paths):
            where = jax.tree_util.keystr(path) or "<root>"
            shape, dtype = tuple(np.shape(leaf)), jnp.dtype(_dtype(leaf))
            decayed = None
            if mask_leaves is not None:
                decayed = _static_bool(where, mask_leaves[i])
                if not jnp.issubdtype(dtype, jnp.floating):
                    decayed = None  # never decayed: grouped by dtype alone
            group = _group_name(dtype, decayed)
            dtypes[group] = dtype.name
            decay[group] = bool(decayed)
            segment = _Segment(group, offsets.get(group, 0), shape, where)
            offsets[group] = segment.offset + segment.size
            segments.append(segment)
        names = sorted(dtypes)
        return cls(
            treedef=treedef,
            segments=tuple(segments),
            group_dtypes=tuple((name, dtypes[name]) for name in names),
            group_decay=None if masks is None else tuple((name, decay[name]) for name in names),
        )

    @property
    def mask(self) -> dict[str, bool] | None:
        return None if self.group_decay is None else dict(self.group_decay)

    @property
    def dtypes(self) -> dict[str, Any]:
        return {name: jnp.dtype(dtype) for name, dtype in self.group_dtypes}

    @property
    def sizes(self) -> dict[str, int]:
        sizes = dict.fromkeys(self.dtypes, 0)
        for segment in self.segments:
            sizes[segment.group] += segment.size
        return sizes

    def pack(self, tree: Any) -> dict[str, jax.Array]:
        """Lays the leaves of ``tree`` end to end: one 1-D buffer per group.

        ``tree`` must have the structure, shapes and dtypes of the params the layout
        was built from (gradients, updates, a copy of the params). Differentiable.

        Raises:
          ValueError: a different tree structure or a leaf of another shape.
          TypeError: a leaf of another dtype (cast it first: packing never rounds).
        """
        if jax.tree.structure(tree) != self.treedef:
            raise ValueError(
                f"{_WHERE}.pack: the tree does not have the structure of the params the "
                f"layout was built from: "
                f"{_tree.first_difference(self._like(), tree, 'the layout', 'the tree')}."
            )
        pieces: dict[str, list[jax.Array]] = {name: [] for name in self.dtypes}
        dtypes = self.dtypes
        for segment, leaf in zip(self.segments, jax.tree.leaves(tree)):
            leaf = jnp.asarray(leaf)
            if leaf.shape != segment.shape:
                raise ValueError(
                    f"{_WHERE}.pack: the leaf at {segment.path} has shape {leaf.shape}, "
                    f"the layout has {segment.shape} there."
                )
            if leaf.dtype != dtypes[segment.group]:
                raise TypeError(
                    f"{_WHERE}.pack: the leaf at {segment.path} is {leaf.dtype}, the "
                    f"layout has {dtypes[segment.group]} there; cast the tree first "
                    "(packing never changes precision)."
                )
            pieces[segment.group].append(leaf.reshape(-1))
        return {name: jnp.concatenate(parts) for name, parts in pieces.items()}

    def unpack(self, packed: dict[str, jax.Array]) -> Any:
        """The tree of views of ``packed``: static slices and reshapes, differentiable.

        ``packed`` is a dict shaped like :meth:`pack`'s output: the params, the
        gradients or updates, or an optimizer statistic such as Adam's ``mu``. Its
        buffers may have another dtype than the layout's (bfloat16 moments, say);
        the views keep it.

        Raises:
          ValueError: other buffer names or sizes than the layout's.
        """
        sizes = self.sizes
        if not isinstance(packed, dict) or sorted(packed) != sorted(sizes):
            keys = sorted(packed) if isinstance(packed, dict) else type(packed).__name__
            raise ValueError(
                f"{_WHERE}.unpack: expected a dict with the buffers {sorted(sizes)}, "
                f"got {keys}."
            )
        for name, size in sizes.items():
            if jnp.shape(packed[name]) != (size,):
                raise ValueError(
                    f"{_WHERE}.unpack: buffer {name!r} has shape {jnp.shape(packed[name])}, "
                    f"the layout needs ({size},)."
                )
        views: dict[str, list[jax.Array]] = {}
        for name in sizes:
            group = [s for s in self.segments if s.group == name]
            parts = jax.lax.split(packed[name], [s.size for s in group])
            views[name] = [part.reshape(s.shape) for part, s in zip(parts, group)]
        cursor = {name: iter(parts) for name, parts in views.items()}
        leaves = [next(cursor[segment.group]) for segment in self.segments]
        return jax.tree.unflatten(self.treedef, leaves)

    def _like(self) -> Any:
        """A stand-in tree with the layout's structure, for error messages."""
        return jax.tree.unflatten(self.treedef, [0] * len(self.segments))


def _dtype(leaf: Any) -> Any:
    dtype = getattr(leaf, "dtype", None)
    return dtype if dtype is not None else jnp.result_type(leaf)
