"""Decay masks for real Flax models (linen and nnx), against torch param groups.

Each model has Dense/Linear, LayerNorm, RMSNorm, BatchNorm, Embed and a block stacked
three times (``nn.scan`` / ``nnx.vmap``), whose LayerNorm scale and biases are 2-D.
Training runs in float64 next to torch's AdamW / Adam with two param groups (the
masked-out leaves with ``weight_decay=0``), fed the same gradients.
"""

from __future__ import annotations

import functools
import warnings
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
from flax import nnx
from flax.core import FrozenDict, freeze
from torch_oracle import relative_error, torch_default_dtype, torch_param_groups

import wdchain

TOKENS = jnp.arange(20).reshape(4, 5) % 16
STEPS = 15
LR = 0.01
WD = 0.5


# --------------------------------------------------------------------------------------
# The models.


class LinenBlock(nn.Module):
    @nn.compact
    def __call__(self, x: Any, _: Any) -> tuple:
        return x + nn.Dense(6)(nn.LayerNorm()(x)), None


class LinenNet(nn.Module):
    @nn.compact
    def __call__(self, tokens: Any) -> Any:
        x = nn.RMSNorm()(nn.Embed(16, 6)(tokens))
        stack = nn.scan(LinenBlock, variable_axes={"params": 0},
                        split_rngs={"params": True}, length=3)
        x, _ = stack()(x, None)
        return nn.Dense(1)(nn.BatchNorm(use_running_average=True)(x))


class NnxBlock(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.norm = nnx.LayerNorm(6, rngs=rngs)
        self.linear = nnx.Linear(6, 6, rngs=rngs)

    def __call__(self, x: Any) -> Any:
        return x + self.linear(self.norm(x))


class NnxNet(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.embed = nnx.Embed(16, 6, rngs=rngs)
        self.rms = nnx.RMSNorm(6, rngs=rngs)

        @nnx.split_rngs(splits=3)
        @nnx.vmap(in_axes=(0,), out_axes=0)
        def stacked(rngs: nnx.Rngs) -> NnxBlock:
            return NnxBlock(rngs)

        self.blocks = stacked(rngs)
        self.bn = nnx.BatchNorm(6, use_running_average=True, rngs=rngs)
        self.head = nnx.Linear(6, 1, rngs=rngs)

    def __call__(self, tokens: Any) -> Any:
        @nnx.scan(in_axes=(nnx.Carry, 0), out_axes=nnx.Carry)
        def forward(x: Any, block: NnxBlock) -> Any:
            return block(x)

        x = forward(self.rms(self.embed(tokens)), self.blocks)
        return self.head(self.bn(x))


def loss_of(output: Any) -> Any:
    return jnp.mean((output - 1.0) ** 2)


# Written out by hand: only kernels (and embeddings, by default) are decayed.
LINEN_MASK = {
    "BatchNorm_0": {"bias": False, "scale": False},
    "Dense_0": {"bias": False, "kernel": True},
    "Embed_0": {"embedding": True},
    "RMSNorm_0": {"scale": False},
    "ScanLinenBlock_0": {
        "Dense_0": {"bias": False, "kernel": True},
        "LayerNorm_0": {"bias": False, "scale": False},
    },
}
NNX_MASK = {
    "blocks": {"linear": {"bias": False, "kernel": True},
               "norm": {"bias": False, "scale": False}},
    "bn": {"bias": False, "scale": False},
    "embed": {"embedding": True},
    "head": {"bias": False, "kernel": True},
    "rms": {"scale": False},
}


@functools.cache
def linen_params() -> tuple[Any, Any]:
    variables = LinenNet().init(jax.random.key(0), TOKENS)
    return variables["params"], variables["batch_stats"]


@functools.cache
def _nnx_model() -> NnxNet:
    return NnxNet(nnx.Rngs(0))


def nnx_model() -> NnxNet:
    """A fresh copy of the (once built) nnx model."""
    return nnx.clone(_nnx_model())


def as_dict(tree: Any) -> Any:
    """A mask tree (dict, FrozenDict or nnx.State) as nested plain dicts."""
    if isinstance(tree, nnx.State):
        tree = tree.to_pure_dict()
    return jax.tree.map(bool, dict(tree) if isinstance(tree, FrozenDict) else tree)


# --------------------------------------------------------------------------------------
# The masks.


def test_linen_mask_by_path_including_the_scanned_block() -> None:
    params, _ = linen_params()
    mask = wdchain.decay_mask(params)
    assert mask == LINEN_MASK
    # The scanned LayerNorm scale and the scanned biases are 2-D, and still excluded:
    # a rule on ndim alone would decay them.
    scanned = params["ScanLinenBlock_0"]
    assert scanned["LayerNorm_0"]["scale"].ndim == 2 and scanned["Dense_0"]["bias"].ndim == 2


def test_frozendict_in_frozendict_out() -> None:
    params, _ = linen_params()
    mask = wdchain.decay_mask(freeze(params))
    assert isinstance(mask, FrozenDict)
    assert mask.unfreeze() == LINEN_MASK


def test_nnx_state_mask_by_path_including_the_vmapped_block() -> None:
    state = nnx.state(nnx_model(), nnx.Param)
    mask = wdchain.decay_mask(state)
    assert isinstance(mask, nnx.State)
    assert as_dict(mask) == NNX_MASK
    assert state["blocks"]["norm"]["scale"].ndim == 2


def test_embeddings_can_be_excluded() -> None:
    params, _ = linen_params()
    assert wdchain.decay_mask(params, embeddings=False)["Embed_0"] == {"embedding": False}
    state = nnx.state(nnx_model(), nnx.Param)
    mask = wdchain.decay_mask(state, embeddings=False)
    assert as_dict(mask)["embed"] == {"embedding": False}


def test_report_lists_every_leaf() -> None:
    params, _ = linen_params()
    report = wdchain.mask_report(params)
    lines = report.splitlines()
    assert len(lines) == len(jax.tree.leaves(params)) + 1
    rows = [line.split(maxsplit=2) for line in lines[:-1]]
    assert ["off", "['ScanLinenBlock_0']['LayerNorm_0']['scale']",
            "(3, 6)     normalisation scale"] in rows
    assert ["decay", "['Embed_0']['embedding']", "(16, 6)    embedding"] in rows
    decayed = 6 + 3 * 36 + 96  # Dense_0 kernel, scanned kernels, embedding
    total = sum(x.size for x in jax.tree.leaves(params))
    assert lines[-1] == f"decayed: {decayed:,} parameters; not decayed: " \
                        f"{total - decayed:,} parameters"
    # Any mask can be reported, e.g. a prefix tree.
    custom = wdchain.mask_report(params, {**{k: False for k in params}, "Dense_0": True})
    assert custom.splitlines()[-1] == "decayed: 7 parameters; not decayed: " \
                                      f"{total - 7:,} parameters"
    nnx_report = wdchain.mask_report(nnx.state(nnx_model(), nnx.Param), embeddings=False)
    assert ["off", "['embed']['embedding']", "(16, 6)    embedding"] in \
        [line.split(maxsplit=2) for line in nnx_report.splitlines()]


# --------------------------------------------------------------------------------------
# Training next to torch param groups.


def torch_run(params: Any, grads_per_step: list, mask_leaves: list[bool], decay: str):
    """torch Adam(W) with the masked-out leaves in a ``weight_decay=0`` group."""
    with torch_default_dtype(np.float64):
        tensors = [torch.tensor(np.asarray(x), requires_grad=True)
                   for x in jax.tree.leaves(params)]
        groups = torch_param_groups(tensors, mask_leaves)
        if decay == "decoupled":
            optimizer = torch.optim.AdamW(groups, lr=LR, weight_decay=WD)
        else:
            optimizer = torch.optim.Adam(groups, lr=LR, weight_decay=WD)
        for grads in grads_per_step:
            for tensor, g in zip(tensors, grads):
                tensor.grad = torch.tensor(np.asarray(g))
            optimizer.step()
        finals = [t.detach().numpy().copy() for t in tensors]
        exp_avgs = [optimizer.state[t]["exp_avg"].numpy().copy() for t in tensors]
    return finals, exp_avgs


def adam_mu(state: Any) -> Any:
    found = [s for s in jax.tree.leaves(
        state, is_leaf=lambda x: isinstance(x, wdchain.ScaleByAdamState))
        if isinstance(s, wdchain.ScaleByAdamState)]
    assert len(found) == 1
    return found[0].mu


def check_against_torch(params0: Any, finals: list, mus: list, grads_per_step: list,
                        decay: str) -> None:
    mask = jax.tree.leaves(wdchain.decay_mask(params0))
    assert 0 < sum(mask) < len(mask)
    expected, exp_avgs = torch_run(params0, grads_per_step, mask, decay)
    assert relative_error(finals, expected) < 1e-12
    assert relative_error(mus, exp_avgs) < 1e-12
    # The masked-out leaves moved and their moments are live.
    for keep, p0, p1, mu in zip(mask, jax.tree.leaves(params0), finals, mus):
        if not keep:
            assert np.any(p1 != np.asarray(p0)) and np.any(mu != 0)


def test_linen_training_matches_torch_param_groups() -> None:
    """AdamW and Adam-L2 with ``mask=wdchain.decay_mask``, both in one jitted step."""
    decays = ("decoupled", "l2")
    with jax.enable_x64(True):
        params, batch_stats = jax.tree.map(lambda x: x.astype(jnp.float64), linen_params())
        txs = [wdchain.build("adam", decay=d, lr=LR, weight_decay=WD, mask=wdchain.decay_mask)
               for d in decays]

        def loss(p: Any) -> Any:
            return loss_of(LinenNet().apply({"params": p, "batch_stats": batch_stats}, TOKENS))

        @jax.jit
        def step(ps: list, states: list) -> tuple:
            grads = [jax.grad(loss)(p) for p in ps]
            moved = [tx.update(g, s, p) for tx, g, s, p in zip(txs, grads, states, ps)]
            ps = [optax.apply_updates(p, u) for p, (u, _) in zip(ps, moved)]
            return ps, [s for _, s in moved], grads

        ps, states = [params, params], [tx.init(params) for tx in txs]
        history: list[list] = [[], []]
        for _ in range(STEPS):
            ps, states, grads = step(ps, states)
            for h, g in zip(history, grads):
                h.append([np.asarray(x) for x in jax.tree.leaves(g)])
        finals = [[np.asarray(x) for x in jax.tree.leaves(p)] for p in ps]
        mus = [[np.asarray(x) for x in jax.tree.leaves(adam_mu(s))] for s in states]
    for i, decay in enumerate(decays):
        check_against_torch(params, finals[i], mus[i], history[i], decay)


def test_nnx_optimizer_matches_torch_param_groups() -> None:
    """``nnx.Optimizer(model, tx, wrt=nnx.Param)`` with the mask as a callable and as
    the tree ``decay_mask(nnx.state(model, nnx.Param))``: both are AdamW with torch's
    param groups."""
    with jax.enable_x64(True):
        models = [nnx_model(), nnx_model()]
        for model in models:
            params = nnx.state(model, nnx.Param)
            nnx.update(model, jax.tree.map(lambda x: x.astype(jnp.float64), params))
        params0 = jax.tree.map(np.asarray, nnx.state(models[0], nnx.Param))
        masks = [wdchain.decay_mask, wdchain.decay_mask(nnx.state(models[1], nnx.Param))]
        optimizers = [
            nnx.Optimizer(model, wdchain.build("adam", decay="decoupled", lr=LR,
                                               weight_decay=WD, mask=mask), wrt=nnx.Param)
            for model, mask in zip(models, masks)
        ]

        @nnx.jit
        def step(models: list, optimizers: list) -> Any:
            grads = nnx.grad(lambda m: loss_of(m(TOKENS)))(models[0])
            for model, optimizer in zip(models, optimizers):
                optimizer.update(model, grads)
            return grads

        history = []
        for _ in range(STEPS):
            grads = step(models, optimizers)
            history.append([np.asarray(g) for g in jax.tree.leaves(grads)])
        finals = [[np.asarray(x) for x in jax.tree.leaves(nnx.state(m, nnx.Param))]
                  for m in models]
        mus = [np.asarray(x) for x in jax.tree.leaves(adam_mu(optimizers[0].opt_state))]
    # Same gradients, same params: the two masks give the same run, bit for bit.
    for a, b in zip(*finals):
        np.testing.assert_array_equal(a, b)
    check_against_torch(params0, finals[0], mus, history, "decoupled")


# --------------------------------------------------------------------------------------
# Leaves named by the user, and a plain dict mask for nnx.


class Positions(nnx.Module):
    """A learned positional table, an ``nnx.Param`` named ``weight`` (as in torch)."""

    def __init__(self) -> None:
        self.weight = nnx.Param(jnp.ones((5, 4)))


class WithPositions(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.embed = Positions()
        self.proj = nnx.Linear(4, 4, rngs=rngs)

    def __call__(self, x: Any) -> Any:
        return self.proj(x + self.embed.weight[...])


def _positions_model() -> Any:
    return WithPositions(nnx.Rngs(0))


def test_exclude_and_include_by_path_pattern() -> None:
    params = {"encoder": {"pos_embedding": jnp.ones((5, 4)), "dense": {"kernel": jnp.ones(2),
                                                                       "bias": jnp.ones(2)}},
              "temperature": jnp.ones(())}
    mask = wdchain.decay_mask(params, exclude=["pos_embedding", "temperature"],
                              include="encoder/dense/bias")
    assert mask == {"encoder": {"pos_embedding": False,
                                "dense": {"kernel": True, "bias": True}},
                    "temperature": False}
    both = wdchain.decay_mask(params, exclude="encoder/*", include="encoder/dense/*")
    assert both["encoder"]["dense"] == {"kernel": False, "bias": False}  # exclude wins
    assert wdchain.decay_mask(params) == wdchain.decay_mask(params, exclude=(), include=())
    report = wdchain.mask_report(params, exclude="temperature")
    row = next(line for line in report.splitlines() if "['temperature']" in line)
    assert row.split() == ["off", "['temperature']", "()", "excluded", "by", "'temperature'"]


def test_a_pattern_that_matches_nothing_is_refused() -> None:
    params = {"encoder": {"pos_embedding": jnp.ones((5, 4))}}
    with pytest.raises(ValueError, match=r"decay_mask: the exclude pattern 'pos_embed' matches "
                                         r"no parameter; the paths look like "
                                         r"'encoder/pos_embedding'"):
        wdchain.decay_mask(params, exclude="pos_embed")
    with pytest.raises(ValueError, match=r"decay_mask_with: exclude must be path patterns"):
        wdchain.decay_mask_with(exclude=[3])


def test_an_nnx_param_named_weight_is_excluded_in_an_nnx_optimizer() -> None:
    model = _positions_model()
    tx = wdchain.adamw(0.1, weight_decay=0.5, mask=wdchain.decay_mask_with(exclude="embed/*"))
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    plain = _positions_model()
    plain_optimizer = nnx.Optimizer(plain, wdchain.adamw(0.1, weight_decay=0.5), wrt=nnx.Param)
    zero = jax.tree.map(jnp.zeros_like, nnx.state(model, nnx.Param))
    optimizer.update(model, zero)
    plain_optimizer.update(plain, zero)
    # Zero gradients: only the decay moves a leaf, θ(1 − lr·λ) = 0.95·θ.
    np.testing.assert_array_equal(model.embed.weight[...], jnp.ones((5, 4)))
    np.testing.assert_allclose(plain.embed.weight[...], 0.95 * jnp.ones((5, 4)), rtol=1e-6)
    np.testing.assert_allclose(model.proj.kernel[...], plain.proj.kernel[...], rtol=1e-6)


def test_a_plain_dict_mask_for_an_nnx_optimizer_is_refused_at_init() -> None:
    model = _positions_model()
    mask = {"embed": {"weight": False}, "proj": {"kernel": True, "bias": False}}
    with pytest.raises(ValueError) as caught:
        nnx.Optimizer(model, wdchain.adamw(mask=mask), wrt=nnx.Param)
    message = str(caught.value)
    assert message.startswith("decoupled_weight_decay: the mask is a dict but the params are "
                              "an nnx.State")
    assert "mask=wdchain.decay_mask" in message and len(message) < 400
    optimizer = nnx.Optimizer(model, wdchain.adamw(mask=nnx.State(mask)), wrt=nnx.Param)
    assert optimizer.opt_state is not None  # the fix the message gives works


@pytest.mark.parametrize("make", [
    lambda mask: wdchain.adamw(weight_decay=0.1, mask=mask),
    lambda mask: wdchain.sgd(weight_decay=0.1, mask=mask),
    lambda mask: wdchain.build("adam", decay="independent", weight_decay=0.1, mask=mask),
], ids=["adamw", "sgd-l2", "build-independent"])
def test_a_mask_that_selects_nothing_warns_at_init(make: Any) -> None:
    """λ > 0 with a mask that selects no leaf decays nothing: one warning at init (issue 17
    §6); a mask that selects one leaf, or λ = 0, says nothing."""
    params = {"w": jnp.ones((2, 2)), "b": jnp.ones(2)}
    for mask in ({"w": False, "b": False}, lambda p: jax.tree.map(lambda _: False, p)):
        with pytest.warns(UserWarning, match=r"weight_decay=0\.1 reaches no leaf.*none of the "
                                             r"2 float leaves"):
            make(mask).init(params)
    make({"w": True, "b": False}).init(params)  # filterwarnings = error: a warning fails
    wdchain.adamw(weight_decay=0.0, mask={"w": False, "b": False}).init(params)


def test_decay_mask_on_a_tree_with_nothing_to_decay_warns() -> None:
    """decay_mask leaves biases and norm scales out: a model of only those decays nothing."""
    params = {"bias": jnp.ones(3), "scale": jnp.ones(3)}
    with pytest.warns(UserWarning, match="reaches no leaf"):
        wdchain.adamw(weight_decay=0.1, mask=wdchain.decay_mask).init(params)


def test_muon_with_others_warns_only_when_no_part_decays() -> None:
    """Muon's build partitions the tree (matrices / the rest); decay_mask leaves the rest's
    biases alone, which is not "nothing decays". A mask selecting nothing: one warning."""
    params = {"w": jnp.ones((3, 2)), "b": jnp.zeros(2)}

    def make(mask: Any) -> Any:
        return wdchain.build("muon", others="adam", decay="independent", weight_decay=0.1,
                             mask=mask)

    make(wdchain.decay_mask).init(params)  # filterwarnings = error: a warning fails
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        make(lambda p: jax.tree.map(lambda _: False, p)).init(params)
    assert [str(w.message).split(":")[0] for w in caught] == ["build"]
    assert "reaches no leaf" in str(caught[0].message)


def test_a_traced_weight_decay_says_nothing_at_init() -> None:
    """Under vmap over a grid's λ (the runner), a cell's λ may be 0: no warning from init."""
    params = {"w": jnp.ones((2, 2))}

    def init(weight_decay: Any) -> Any:
        return wdchain.adamw(weight_decay=weight_decay, mask={"w": False}).init(params)

    jax.vmap(init)(jnp.array([0.0, 0.1]))  # filterwarnings = error: a warning fails
