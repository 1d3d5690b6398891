"""One arm's grid for one seed as one jitted program, its cells spread over devices.

The cells of a grid are laid out as arrays with a leading cell axis: ``jax.vmap`` runs
the cells side by side and ``lax.scan`` runs the steps of a chunk of epochs. The cells
share their initial weights and see the same batches; they differ only by their
(lr, λ), which enter the program as traced values, so a grid compiles once per arm
and is reused for every seed. With several devices the cell axis is sharded over a 1-D
``jax.sharding.Mesh``; the cells never talk to each other, so the program needs no
communication and the result equals a one-device run.

On a CPU each cell gets its own copy of the batch (a broadcast along the cell axis, when
the copies take at most ``PER_CELL_BATCH_BYTES``): every matmul is then a batched
matmul, cell by cell, instead of one wide matmul of the shared batch against all cells'
first-layer weights, whose operands XLA:CPU transposes every step (forward and
backward). Measured on a 2-core CPU (``benchmarks/sweep.py``), the LayerNorm MLP's
grids train 0.92× as long per step when two train at once, as the runner trains them
there; one alone is as fast either way (1.00×). The two compute the same sums; only
the rounding of the first layer's products may differ. Other backends share the batch.

Seeds run one after the other, each over all devices, or several seeds join the cell
axis (a tuple of seeds given to :meth:`GridProgram.initial_carry`,
:meth:`~GridProgram.train_chunk` and :meth:`~GridProgram.evaluate_seeds`): one program
then trains cells × seeds, the cells ordered seed-major, each cell taking its own seed's
batch and step key (a gather along the seed axis, so every cell has its own copy of the
batch) and each seed's cells evaluated on that seed's splits. Which is faster is measured
(:mod:`wdchain.ablate._layout`). On a 2-core CPU one seed's 64 cells per program were
never slower: three seeds joined (192 cells) took 1.02–1.28× as long per cell and step
as one seed at a time, 1.03–1.21× with two programs at once as the runner trains them
(the MNIST-1D MLP, ``python benchmarks/sweep.py --joined-seeds 3``, medians of paired
ratios, three runs on a machine shared with other jobs, the higher figures at the higher
load; an earlier measurement read 2.4×).

The state between chunks (params, optimizer state, other model state, a divergence
flag) is what :mod:`wdchain.ablate._resume` checkpoints.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from wdchain.ablate import _distributed, _step
from wdchain.ablate._arms import Arm
from wdchain.ablate._checks import check_batch
from wdchain.ablate._convolutions import canonical_convolutions
from wdchain.ablate._models import as_called, call_for, first_difference, structure
from wdchain.ablate._schedules import cosine
from wdchain.ablate._task import Task
from wdchain.registry import REGISTRY

EVAL_BATCH = 1000
CHECKPOINTS_PER_RUN = 10
PER_CELL_BATCH_BYTES = 64 * 2**20  # the most a step's per-cell batch copies may take


def cosine_multiplier(total_steps: int) -> Callable[[Any], jax.Array]:
    """η(t) = (1 + cos(π·t / T)) / 2: the default schedule's multiplier (``cosine()(T)``).

    Example:
      >>> eta = cosine_multiplier(10)
      >>> float(eta(0)), float(eta(5)), float(eta(10))
      (1.0, 0.5, 0.0)
    """
    return cosine()(total_steps)


def chunk_epochs(epochs: int) -> int:
    """Epochs per jitted call: ceil(epochs / 10), so a run checkpoints about 10 times."""
    return max(1, math.ceil(epochs / CHECKPOINTS_PER_RUN))


class Carry(NamedTuple):
    """The training state of every cell: arrays with a leading cell axis."""

    params: Any
    opt_state: Any
    rest: Any
    diverged: jax.Array


class Metrics(NamedTuple):
    """Final metrics of one seed, one entry per cell.

    ``extra`` holds the loss's other metrics, ``validation_<name>`` and
    ``test_<name>`` for each metric besides ``error``.
    """

    train_loss: np.ndarray
    validation_loss: np.ndarray
    validation_error: np.ndarray
    test_loss: np.ndarray
    test_error: np.ndarray
    diverged: np.ndarray
    extra: dict[str, np.ndarray] = {}


def local_mesh(devices: Sequence[Any] | None) -> Mesh:
    """A 1-D mesh named ``cells`` over ``devices``; None: every device, of every process
    after ``jax.distributed.initialize`` (of this one otherwise)."""
    devices = list(jax.devices() if devices is None else devices)
    if not devices:
        raise ValueError("sweep: devices is empty; give at least one device, or None for all")
    return Mesh(np.array(devices), ("cells",))


class GridProgram:
    """Trains one arm for every (lr, λ) cell, side by side, one seed at a time.

    Args:
      task: the task; ``task.for_seed(seed)`` gives each seed's splits.
      arm: the arm (its optimizer is built with a traced lr and λ).
      lrs, weight_decays: one value per cell.
      mesh: the devices to spread the cells over (padded to a multiple of their number).
      per_cell_batch: give each cell its own copy of the batch (True) or share it
        (False); None decides by :func:`batch_per_cell`. Only the speed (and the
        rounding of the first layer's products) differs.
      cells_per_program: train the cells in groups of at most this many per program
        run (``groups``: ``group`` of :meth:`initial_carry`, :meth:`train_chunk`,
        :meth:`evaluate`); None: all at once. Every group has the same padded size, so
        the program compiles once for all of them.

    A seed changes the initial weights (``task.model(nnx.Rngs(seed))``, so also the
    model's other RNG streams, e.g. Dropout's), the batch order and, for tasks with
    ``splits``, the data split. The program compiles once, for the first seed. Where a
    method takes ``seed``, a tuple of several seeds trains them joined in one program
    (their cells seed-major: the carry's cell axis holds ``len(seed) × padded`` cells);
    an int or a one-seed tuple is one seed's program.
    """

    def __init__(self, task: Task, arm: Arm, lrs: np.ndarray, weight_decays: np.ndarray,
                 mesh: Mesh, per_cell_batch: bool | None = None,
                 cells_per_program: int | None = None):
        self.task, self.arm, self.mesh = task, arm, mesh
        self.per_cell_batch = per_cell_batch
        self.cells = len(lrs)
        self.cell_lrs = np.asarray(lrs, np.float64)  # as given, for the rows
        self.cell_weight_decays = np.asarray(weight_decays, np.float64)
        self._first_run = threading.Lock()  # threads of one arm compile it once
        self._compiled = False
        devices = mesh.devices.size
        per_group = self.cells if cells_per_program is None else min(cells_per_program,
                                                                     self.cells)
        self.groups = [range(start, min(start + per_group, self.cells))
                       for start in range(0, self.cells, per_group)]
        self.padded = math.ceil(per_group / devices) * devices  # cells per program run
        self.lrs, self.weight_decays = (
            np.stack([_pad(np.asarray(values)[group], self.padded) for group in self.groups])
            for values in (lrs, weight_decays))  # (groups, padded), float32
        self._tasks: dict[int, Task] = {}
        self.steps_per_epoch = self.task_for(0).train_steps_per_epoch()
        self.total_steps = task.epochs * self.steps_per_epoch
        self.schedule = task.schedule_fn(self.total_steps)
        self.chunk = chunk_epochs(task.epochs)
        self._cell_sharding = NamedSharding(mesh, PartitionSpec("cells"))
        self._replicated = NamedSharding(mesh, PartitionSpec())
        self._build()

    def task_for(self, seed: int) -> Task:
        """The task's splits for ``seed`` (computed once)."""
        if seed not in self._tasks:
            self._tasks[seed] = self.task.for_seed(seed)
        return self._tasks[seed]

    def optimizer(self, lr: Any, weight_decay: Any) -> optax.GradientTransformation:
        """The arm's optimizer for one cell: the Task's schedule, clipping and decay mask
        (by default biases and norms are not decayed)."""
        return _step.optimizer(self.task, self.arm, lr, weight_decay, self.schedule)

    def _model_state(self, seed: int) -> tuple[Any, Any]:
        """The seed's initial (params, other state), checked to match the program's."""
        model = self.task.model(nnx.Rngs(seed))
        model.train()
        _, params, rest = _split(model)
        found = structure(params, rest)
        if found != self._structure:
            raise ValueError(
                f"Task: model(nnx.Rngs({seed})) has other variables than model(nnx.Rngs(0)): "
                f"{first_difference(self._structure, found)}; the model must not depend on "
                "the seed except by its RNGs"
            )
        return params, rest

    def _build(self) -> None:
        model = self.task.model(nnx.Rngs(0))
        if not isinstance(model, nnx.Module):
            raise TypeError(f"Task: model(rngs) must return an nnx.Module, got {model!r}")
        self.call = call_for(model, self.task.call)
        model.train()
        graph, params, rest = _split(model)
        self._train_graph: Any = graph
        self._structure = structure(params, rest)
        model.eval()
        self._eval_graph: Any = _split(model)[0]
        loss_fn = self.task.loss_fn
        eval_graph, call = self._eval_graph, self.call
        make_tx = self.optimizer
        gradient = _step.gradient(self.task, self._train_graph, call)

        def cell_step(params, opt_state, rest, lr, weight_decay, batch, key=None):
            loss, grads, rest = gradient(params, rest, batch, key)
            updates, opt_state = make_tx(lr, weight_decay).update(grads, opt_state, params)
            return optax.apply_updates(params, updates), opt_state, rest, loss

        if jax.default_backend() == "cpu":  # see wdchain.ablate._convolutions
            cell_step = canonical_convolutions(cell_step)

        shared_batch_step = jax.vmap(cell_step, in_axes=(0, 0, 0, 0, 0, None, None))
        per_cell_batch_step = jax.vmap(cell_step, in_axes=(0, 0, 0, 0, 0, 0, None))
        cells = self.padded

        def run_chunk(carry: Carry, lrs, weight_decays, batches, keys) -> Carry:
            per_cell = (batch_per_cell(batches, cells) if self.per_cell_batch is None
                        else self.per_cell_batch)
            grid_step = per_cell_batch_step if per_cell else shared_batch_step

            def body(carry: Carry, step):
                batch, key = step
                if per_cell:
                    batch = _broadcast_cells(batch, cells)
                params, opt_state, rest, loss = grid_step(
                    carry.params, carry.opt_state, carry.rest, lrs, weight_decays, batch, key)
                return Carry(params, opt_state, rest,
                             carry.diverged | ~jnp.isfinite(loss)), None

            return jax.lax.scan(body, carry, (batches, keys))[0]

        joined_step = jax.vmap(cell_step)  # every cell its own batch and key

        def run_joined(carry: Carry, lrs, weight_decays, batches, keys) -> Carry:
            # batches: (steps, seeds, batch, ...), keys: (steps, seeds); cells seed-major.
            seed_of_cell = jnp.repeat(jnp.arange(keys.shape[1]), cells)

            def body(carry: Carry, step):
                batch, key = jax.tree.map(lambda a: a[seed_of_cell], step)
                params, opt_state, rest, loss = joined_step(
                    carry.params, carry.opt_state, carry.rest, lrs, weight_decays, batch, key)
                return Carry(params, opt_state, rest,
                             carry.diverged | ~jnp.isfinite(loss)), None

            return jax.lax.scan(body, carry, (batches, keys))[0]

        def init(params, lr, weight_decay):
            return make_tx(lr, weight_decay).init(params)

        evaluated_at = REGISTRY[self.arm.preconditioner].eval_params

        def cell_eval(params, opt_state, rest, batch):
            if evaluated_at is not None:  # e.g. schedule-free: its average x, not y
                params = evaluated_at(opt_state, params)
            model = nnx.merge(eval_graph, params, rest)
            loss, metrics = loss_fn(as_called(model, call, None), batch)
            return loss, {"error": loss, **metrics}

        # The state's zeros depend on no input: without out_shardings XLA puts them on
        # one device, not with their cells.
        self._init_state = jax.jit(jax.vmap(init), out_shardings=self._cell_sharding)
        self._run_chunk = jax.jit(run_chunk, donate_argnums=(0,))
        self._run_joined = jax.jit(run_joined, donate_argnums=(0,))
        self._seed_part = jax.jit(
            lambda carry, k: jax.tree.map(
                lambda a: jax.lax.dynamic_slice_in_dim(a, k * cells, cells), carry),
            out_shardings=self._cell_sharding)
        self._executables: dict[int, Any] = {}  # compiled ahead of time, by chunk steps
        self.cell_step = cell_step
        self._evaluate = jax.jit(jax.vmap(cell_eval, in_axes=(0, 0, 0, None)))

    # -- data ------------------------------------------------------------------------
    def batches(self, seed: int, epochs: range) -> tuple[np.ndarray, np.ndarray]:
        """The batches of ``epochs``, stacked (steps, batch, ...) for ``lax.scan``."""
        task = self.task_for(seed)
        if callable(task.train):
            steps = [batch for epoch in epochs for batch in task.train(seed, epoch)]
            for index, batch in enumerate(steps):
                check_batch(batch, task.batch_size, index)
            expected = len(epochs) * self.steps_per_epoch
            if len(steps) != expected:
                raise ValueError(
                    f"Task: the batch function yielded {len(steps)} batches for {len(epochs)} "
                    f"epoch(s), expected steps_per_epoch × epochs = {expected}"
                )
            return (np.stack([np.asarray(b[0]) for b in steps]),
                    np.stack([np.asarray(b[1]) for b in steps]))
        x, y = (np.asarray(a) for a in task.train)
        size = task.batch_size
        order = np.concatenate([
            np.random.default_rng([seed, epoch]).permutation(len(x))[: self.steps_per_epoch * size]
            for epoch in epochs
        ]).reshape(-1, size)
        return x[order], y[order]

    def joined_batches(self, seeds: Sequence[int], epochs: range) -> tuple[np.ndarray, np.ndarray]:
        """The batches of ``epochs`` for each of ``seeds``, stacked (steps, seeds, batch, ...)."""
        parts = [self.batches(seed, epochs) for seed in seeds]
        return np.stack([p[0] for p in parts], axis=1), np.stack([p[1] for p in parts], axis=1)

    # -- running ---------------------------------------------------------------------
    def initial_carry(self, seed: int | Sequence[int], group: int = 0) -> Carry:
        """Every cell of ``group`` at the seed's initial weights (of each seed, seed-major,
        for several), sharded over the mesh."""
        seeds = _as_seeds(seed)
        cells = len(seeds) * self.padded
        states = [self._model_state(s) for s in seeds]
        if len(seeds) == 1:
            params, rest = states[0]
            params = _distributed.put(params, self._cell_sharding, cells=self.padded)
            rest = _distributed.put(rest, self._cell_sharding, cells=self.padded)
        else:
            params, rest = (_distributed.put(jax.tree.map(
                lambda *leaves: _repeat_seeds(leaves, self.padded), *trees), self._cell_sharding)
                for trees in zip(*states))
        lrs, weight_decays = self.cell_hyperparams(group, len(seeds))
        opt_state = self._init_state(params, lrs, weight_decays)
        diverged = self._put_cells(np.zeros(cells, bool))
        return Carry(params, opt_state, rest, diverged)

    def carry_shapes(self, seed: int) -> Carry:
        """The shapes, dtypes and shardings of :meth:`initial_carry` (nothing allocated)."""
        params, rest = jax.eval_shape(lambda: self._model_state(seed))

        def cells(tree: Any) -> Any:
            return jax.tree.map(lambda a: jax.ShapeDtypeStruct(
                (self.padded, *a.shape), a.dtype, sharding=self._cell_sharding), tree)

        hyper = jax.ShapeDtypeStruct((self.padded,), np.float32, sharding=self._cell_sharding)
        params, rest = cells(params), cells(rest)
        opt_state = jax.eval_shape(self._init_state, params, hyper, hyper)
        opt_state = jax.tree.map(lambda a: jax.ShapeDtypeStruct(
            a.shape, a.dtype, sharding=self._cell_sharding), opt_state)
        diverged: Any = jax.ShapeDtypeStruct((self.padded,), np.bool_,
                                             sharding=self._cell_sharding)
        return Carry(params, opt_state, rest, diverged)

    def cell_hyperparams(self, group: int = 0, seeds: int = 1) -> tuple[jax.Array, jax.Array]:
        """Per-cell lr and λ of ``group`` (repeated for each of ``seeds`` joined seeds),
        sharded over the mesh."""
        return (self._put_cells(np.tile(self.lrs[group], seeds)),
                self._put_cells(np.tile(self.weight_decays[group], seeds)))

    def _put_cells(self, tree: Any) -> Any:
        return _distributed.put(tree, self._cell_sharding)

    def train_chunk(self, carry: Carry, seed: int | Sequence[int], first_epoch: int,
                    group: int = 0) -> tuple[Carry, int]:
        """Trains ``self.chunk`` epochs (fewer at the end); the carry and the next epoch."""
        if not self._compiled:
            with self._first_run:  # a second thread waits here rather than compile again
                result = self._train_chunk(carry, seed, first_epoch, group)
                self._compiled = True
                return result
        return self._train_chunk(carry, seed, first_epoch, group)

    def _train_chunk(self, carry: Carry, seed: int | Sequence[int], first_epoch: int,
                     group: int) -> tuple[Carry, int]:
        epochs = range(first_epoch, min(first_epoch + self.chunk, self.task.epochs))
        seeds = _as_seeds(seed)
        lrs, weight_decays = self.cell_hyperparams(group, len(seeds))
        if len(seeds) == 1:
            batches = _distributed.put(self.batches(seeds[0], epochs), self._replicated)
            keys = self.step_keys(seeds[0], epochs)
            run = self._executables.get(len(batches[0]), self._run_chunk)
        else:
            batches = _distributed.put(self.joined_batches(seeds, epochs), self._replicated)
            keys = self.step_keys(seeds, epochs)
            run = self._run_joined
        carry = run(carry, lrs, weight_decays, batches, keys)
        jax.block_until_ready(carry)
        return carry, epochs.stop

    def step_keys(self, seed: int | Sequence[int], epochs: range) -> Any:
        """The PRNG keys of the steps of ``epochs`` (for a model called with its RNGs):
        (steps,), or (steps, seeds) for a tuple of seeds."""
        steps = range(epochs.start * self.steps_per_epoch, epochs.stop * self.steps_per_epoch)
        keys = (_step.step_keys(seed, steps) if isinstance(seed, int | np.integer) else
                jnp.stack([_step.step_keys(s, steps) for s in seed], axis=1))
        return _distributed.put(keys, self._replicated)

    def compile_chunk(self, seed: int) -> Any:
        """The first chunk's program compiled ahead of time, kept for training (its
        ``memory_analysis()`` and ``cost_analysis()`` are the program's own)."""
        epochs = range(0, min(self.chunk, self.task.epochs))
        batches = self.batches(seed, epochs)
        steps = len(batches[0])
        if steps not in self._executables:
            hyper = jax.ShapeDtypeStruct((self.padded,), np.float32,
                                         sharding=self._cell_sharding)
            self._executables[steps] = self._run_chunk.lower(
                self.carry_shapes(seed), hyper, hyper,
                _with_sharding(batches, self._replicated),
                self.step_keys(seed, epochs)).compile()
        return self._executables[steps]

    def evaluate_seeds(self, carry: Carry, seeds: Sequence[int],
                       group: int = 0) -> list[Metrics]:
        """:meth:`evaluate` for each of ``seeds`` joined in ``carry``: its cells, on its
        own splits."""
        if len(seeds) == 1:
            return [self.evaluate(carry, seeds[0], group)]
        return [self.evaluate(self._seed_part(carry, k), seed, group)
                for k, seed in enumerate(seeds)]

    def evaluate(self, carry: Carry, seed: int, group: int = 0) -> Metrics:
        """Loss and error on each split, per cell of ``group`` (the padding dropped), and
        the loss's other metrics on validation and test.

        A cell whose training loss was ever non-finite, or whose final losses are,
        is diverged: its losses and errors are NaN, never a number read as an error.
        """
        task = self.task_for(seed)
        real = len(self.groups[group])
        validation = self._evaluate_split(carry, task.validation, real)
        test = self._evaluate_split(carry, task.test, real)
        train = validation if callable(task.train) else self._evaluate_split(
            carry, task.train, real)
        diverged = _distributed.to_host(carry.diverged)[:real]
        values = [train["loss"], validation["loss"], validation["error"], test["loss"],
                  test["error"]]
        diverged = diverged | ~np.all([np.isfinite(v) for v in values], axis=0)
        train_loss, validation_loss, validation_error, test_loss, test_error = (
            np.where(diverged, np.nan, v) for v in values)
        extra = {f"{split}_{name}": np.where(diverged, np.nan, means[name])
                 for split, means in (("validation", validation), ("test", test))
                 for name in means if name not in ("loss", "error")}
        return Metrics(train_loss, validation_loss, validation_error, test_loss, test_error,
                       diverged, extra)

    def _evaluate_split(self, carry: Carry, split: Any, real: int) -> dict[str, np.ndarray]:
        """Per cell: the mean loss (``loss``) and each metric over the split, in chunks of
        ``EVAL_BATCH`` examples (a chunk's mean weighted by its size)."""
        x, y = split
        size = len(x)
        sums: dict[str, np.ndarray] = {}
        for start in range(0, size, EVAL_BATCH):
            part = (np.asarray(x[start:start + EVAL_BATCH]), np.asarray(y[start:start + EVAL_BATCH]))
            loss, metrics = self._evaluate(carry.params, carry.opt_state, carry.rest,
                                           _distributed.put(part, self._replicated))
            for name, value in {"loss": loss, **metrics}.items():
                sums[name] = sums.get(name, 0.0) + (
                    _distributed.to_host(value).astype(np.float64) * len(part[0]))
        return {name: total[:real] / size for name, total in sums.items()}


def batch_per_cell(batches: Any, cells: int) -> bool:
    """Whether each cell trains on its own copy of the batch (see the module's docstring).

    On a CPU, when a step's copies (``batches`` holds the chunk's steps along its
    first axis) take at most ``PER_CELL_BATCH_BYTES``; elsewhere the batch is shared.
    """
    if jax.default_backend() != "cpu":
        return False
    step_bytes = sum(math.prod(np.shape(leaf)[1:]) * np.dtype(leaf.dtype).itemsize
                     for leaf in jax.tree.leaves(batches))
    return step_bytes * cells <= PER_CELL_BATCH_BYTES


_split = _step.split


def _with_sharding(tree: Any, sharding: Any) -> Any:
    return jax.tree.map(lambda a: jax.ShapeDtypeStruct(np.shape(a), a.dtype, sharding=sharding),
                        tree)


def _as_seeds(seed: int | Sequence[int]) -> tuple[int, ...]:
    return (seed,) if isinstance(seed, int | np.integer) else tuple(seed)


def _repeat_seeds(leaves: Sequence[Any], cells: int) -> Any:
    """One leaf per seed, each repeated for the seed's ``cells``: (seeds × cells, ...)."""
    stacked = jnp.stack(leaves)
    return jnp.broadcast_to(stacked[:, None], (len(leaves), cells, *stacked.shape[1:])).reshape(
        len(leaves) * cells, *stacked.shape[1:])


def _pad(values: np.ndarray, size: int) -> np.ndarray:
    """``values`` (float32) with the last repeated up to ``size`` entries."""
    return np.concatenate([values, np.repeat(values[-1:], size - len(values))]).astype(np.float32)


def _broadcast_cells(tree: Any, cells: int) -> Any:
    """Every leaf repeated along a new leading cell axis."""
    return jax.tree.map(lambda leaf: jnp.broadcast_to(leaf, (cells, *jnp.shape(leaf))), tree)
