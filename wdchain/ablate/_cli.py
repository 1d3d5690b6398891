"""The command line: check every argument, then sweep and report."""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import math
import shlex
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from wdchain.ablate._arms import default_grids_text, parse_arm
from wdchain.ablate._builtin import TASKS
from wdchain.ablate._interrupt import Interrupted
from wdchain.ablate._outputs import write_outputs
from wdchain.ablate._presets import PRESETS
from wdchain.ablate._resume import CheckpointWriteError
from wdchain.ablate._schedules import parse_schedule
from wdchain.ablate._sweep import run_info, sweep
from wdchain.ablate._task import Task


def _arms(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise argparse.ArgumentTypeError("give at least one arm, e.g. --arms adam-l2,adamw")
    try:
        return [parse_arm(name).name for name in dict.fromkeys(names)]
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _numbers(text: str, *, zero: bool) -> np.ndarray:
    try:
        values = [float(item) for item in text.split(",") if item.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers, e.g. 1e-3,1e-2, got {text!r}"
        ) from None
    if not values:
        raise argparse.ArgumentTypeError(f"the grid is empty ({text!r}): give at least one value")
    bad = [v for v in values if not (math.isfinite(v) and (v >= 0 if zero else v > 0))]
    if bad:
        rule = "finite and ≥ 0 (0 is the no-decay baseline)" if zero else \
            "finite and > 0 (the grid is log-spaced)"
        raise argparse.ArgumentTypeError(f"grid values must be {rule}, got {bad[0]!r}")
    return np.array(sorted(set(values)))


def _int_at_least(low: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = low - 1
        if value < low:
            raise argparse.ArgumentTypeError(f"must be an integer ≥ {low}, got {text!r}")
        return value

    return parse


def _seeds(text: str) -> tuple[int, ...]:
    parse = _int_at_least(0)
    values = tuple(dict.fromkeys(parse(item.strip()) for item in text.split(",") if item.strip()))
    if not values:
        raise argparse.ArgumentTypeError("give at least one seed, e.g. --seeds 0,1,2")
    return values


def _schedule(text: str) -> Any:
    try:
        return parse_schedule(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text!r}")
    return value


def _sizes(text: str) -> tuple[int, ...]:
    parse = _int_at_least(1)
    values = tuple(sorted({parse(item.strip()) for item in text.split(",") if item.strip()}))
    if not values:
        raise argparse.ArgumentTypeError("give at least one value, e.g. 1000,2000,4000")
    return values


def _writable_folder(text: str) -> Path:
    if not text.strip():
        raise argparse.ArgumentTypeError(
            "the output folder is empty; give a folder, e.g. --out results (use --out . "
            "to write into the current directory)")
    folder = Path(text)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise argparse.ArgumentTypeError(
            f"cannot write to output folder {text!r}: {error.strerror or error}"
        ) from None
    return folder


def load_task(spec: str) -> Task:
    """A built-in task's name, or ``package.module:factory`` (called with no arguments)."""
    if spec in TASKS:
        return TASKS[spec]()
    module_name, colon, attribute = spec.partition(":")
    if not colon or not module_name or not attribute:
        raise ValueError(
            f"unknown task {spec!r}: use a built-in task ({', '.join(TASKS)}) or "
            "package.module:factory, a function that returns a wdchain.ablate.Task"
        )
    try:
        factory = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as error:
        raise ValueError(f"cannot load task {spec!r}: {error}") from None
    task = factory()
    if not isinstance(task, Task):
        raise TypeError(f"task {spec!r} returned {type(task).__name__}, not a wdchain.ablate.Task")
    return task


def parser() -> argparse.ArgumentParser:
    """The runner's arguments."""
    presets = "; ".join(f"{name}: {preset.about}" for name, preset in PRESETS.items())
    parse = argparse.ArgumentParser(
        prog="wdchain-ablate",
        description="Train a Flax model for every learning rate × weight decay × seed of each "
        "arm (one vmapped program per arm), select on validation, report on test.",
        epilog=f"Presets: {presets}. {default_grids_text()}",
    )
    parse.add_argument("--preset", choices=sorted(PRESETS), default="default",
                       help="what to run unless the options below say otherwise (default: "
                       "default)")
    parse.add_argument("--task", default=None,
                       help=f"a built-in task ({', '.join(TASKS)}) or package.module:factory "
                       "returning a wdchain.ablate.Task")
    parse.add_argument("--arms", type=_arms, default=None,
                       help="comma-separated arms: <preconditioner>-<decay> of wdchain.build, "
                       "or adamw, adamw-independent, sgdw")
    parse.add_argument("--lrs", type=lambda t: _numbers(t, zero=False), default=None,
                       help="comma-separated peak learning rates (default: per-arm grid)")
    parse.add_argument("--wds", type=lambda t: _numbers(t, zero=True), default=None,
                       help="comma-separated weight decays, 0 allowed (default: per-arm grid)")
    parse.add_argument("--grid-size", type=_int_at_least(1), default=None,
                       help="points of the default grids")
    parse.add_argument("--epochs", type=_int_at_least(1), default=None,
                       help="epochs per cell (overrides the task's)")
    parse.add_argument("--batch-size", type=_int_at_least(1), default=None,
                       help="batch size (overrides the task's)")
    parse.add_argument("--schedule", type=_schedule, default=None,
                       help="the lr multiplier η(t) (overrides the task's): cosine | "
                       "warmup_cosine:0.05 | wsd:0.05:0.2 | linear:0.05 | constant (fractions "
                       "of the run)")
    parse.add_argument("--clip-norm", type=_positive, default=None,
                       help="clip the gradient to this global norm before the optimizer (it "
                       "sees the loss's gradient, before L2 adds λθ)")
    parse.add_argument("--accumulate", type=_int_at_least(1), default=None,
                       help="average the gradients of K micro-batches of batch-size / K "
                       "examples per step")
    parse.add_argument("--seeds", type=_seeds, nargs="+", default=None,
                       help="seeds, comma- or space-separated, e.g. 0,1,2 or 0 1 2")
    parse.add_argument("--train-sizes", type=_sizes, default=None,
                       help="comma-separated training-set sizes, e.g. 1000,2000,4000,8000: "
                       "every grid trains on nested, stratified subsets of the training split "
                       "(a train_size column; the summary fits λ* against N)")
    parse.add_argument("--widths", type=_sizes, default=None,
                       help="comma-separated model widths, e.g. 50,100,200: the model is built "
                       "as model(rngs, width=w) (the built-in tasks' hidden units; a width "
                       "column)")
    parse.add_argument("--out", type=_writable_folder, default="results",
                       help="output folder (default results/); an interrupted run started "
                       "again with the same command resumes there")
    parse.add_argument("--fresh", nargs="?", const=True, default=False, choices=["all"],
                       help="discard the checkpoints and outputs in --out and start over, "
                       "keeping finished (arm, seed) rows whose configuration is unchanged; "
                       "--fresh all discards those too")
    parse.add_argument("--layout", choices=["vmap", "groups", "loop"], default=None,
                       help="how each grid's cells run: all in one program (vmap), in "
                       "groups of --cells-per-program, or one cell per device at a time "
                       "(loop); default: measured by a short probe before training")
    parse.add_argument("--cells-per-program", type=_int_at_least(1), default=None,
                       help="the most cells one program trains (default: as many as fit in "
                       "memory, from the compiled program's memory analysis)")
    parse.add_argument("--seeds-per-program", type=_int_at_least(1), default=None,
                       help="the seeds one program trains joined, cells × seeds (default: "
                       "measured on a GPU or TPU when they fit; 1 on a CPU, where one seed "
                       "at a time is faster)")
    parse.add_argument("--coordinator", default=None, metavar="HOST:PORT",
                       help="one process of a multi-process run: the coordinator's address "
                       "(jax.distributed.initialize's coordinator_address); give "
                       "--num-processes and --process-id too")
    parse.add_argument("--num-processes", type=_int_at_least(1), default=None,
                       help="with --coordinator: the number of processes")
    parse.add_argument("--process-id", type=_int_at_least(0), default=None,
                       help="with --coordinator: this process's index, 0 … N−1 (0 writes "
                       "the outputs)")
    parse.add_argument("--distributed", action="store_true",
                       help="join a multi-process run the environment describes (a TPU pod, "
                       "SLURM, Open MPI): jax.distributed.initialize() without arguments")
    parse.add_argument("--no-trajectories", action="store_true",
                       help="skip retraining each arm's selected cell with diagnostics")
    return parse


_NUMBER_OPTIONS = ("--lrs", "--wds", "--seeds", "--epochs", "--batch-size", "--grid-size")


def _join_negative_numbers(argv: Sequence[str]) -> list[str]:
    """``--lrs -1e-3`` as ``--lrs=-1e-3``: argparse takes a value starting with '-' that
    is not a plain integer for an option, and says only 'expected one argument'."""
    joined: list[str] = []
    items = list(argv)
    for index, item in enumerate(items):
        previous = joined[-1] if joined else None
        if previous in _NUMBER_OPTIONS and item.startswith("-") and index > 0:
            try:
                float(item.split(",")[0])
            except ValueError:
                joined.append(item)
                continue
            joined[-1] = f"{previous}={item}"
            continue
        joined.append(item)
    return joined


class _ChunkLines:
    """Without a terminal: one line per finished chunk, with elapsed time and an estimate."""

    def __init__(self, total_epochs: int):
        self.total, self.done, self.start = total_epochs, 0, time.monotonic()

    def __call__(self, arm: str, seed: int, epochs: int, epoch: int, of: int) -> None:
        self.done += epochs
        elapsed = time.monotonic() - self.start
        left = elapsed / self.done * (self.total - self.done) if self.done else math.nan
        print(f"{arm} seed {seed}: epoch {_epochs(epoch)}/{of} · {_clock(elapsed)} elapsed · "
              f"~{_clock(left)} left ({_epochs(self.done)}/{self.total} epochs)",
              file=sys.stderr, flush=True)


def _epochs(count: float) -> str:
    """Epochs to one decimal (a group of a grid's cells counts as a fraction of an epoch).

    Example:
      >>> _epochs(12), _epochs(5.333333333333334), _epochs(8.000000000000002)
      ('12', '5.3', '8')
    """
    return f"{count:.1f}".removesuffix(".0")


def _clock(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _join_processes(parse: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """``jax.distributed.initialize`` from the multi-process flags, before JAX starts."""
    flags = (args.coordinator, args.num_processes, args.process_id)
    if args.distributed and any(flag is not None for flag in flags):
        parse.error("--distributed takes its settings from the environment; give it alone, "
                    "or --coordinator, --num-processes and --process-id without it")
    if any(flag is not None for flag in flags):
        if any(flag is None for flag in flags):
            parse.error("a multi-process run needs --coordinator HOST:PORT, --num-processes N "
                        "and --process-id I together")
        if args.process_id >= args.num_processes:
            parse.error(f"--process-id must be below --num-processes ({args.num_processes}), "
                        f"got {args.process_id}")
    elif not args.distributed:
        return
    from wdchain.ablate import _distributed

    _distributed.initialize(*flags)


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m wdchain.ablate`` / ``wdchain-ablate``; see ``--help``."""
    from tqdm import tqdm

    parse = parser()
    given = list(sys.argv[1:] if argv is None else argv)
    args = parse.parse_args(_join_negative_numbers(given))
    _join_processes(parse, args)
    if args.seeds is not None:
        args.seeds = tuple(dict.fromkeys(s for group in args.seeds for s in group))
    preset = PRESETS[args.preset]
    try:
        task = load_task(args.task or preset.task)
    except (TypeError, ValueError) as error:
        parse.error(str(error))
    if args.task is None or args.epochs is not None:
        task = dataclasses.replace(task, epochs=args.epochs or preset.epochs)
    if args.batch_size is not None:
        task = dataclasses.replace(task, batch_size=args.batch_size)
    recipe = {name: value for name, value in (("schedule", args.schedule),
              ("clip_norm", args.clip_norm), ("accumulate", args.accumulate))
              if value is not None}
    if recipe:
        try:
            task = dataclasses.replace(task, **recipe)
        except (TypeError, ValueError) as error:
            parse.error(str(error))
    arms = args.arms or list(preset.arms)
    seeds = args.seeds or preset.seeds
    grid_size = args.grid_size or preset.grid_size
    own = args.arms is None and args.grid_size is None  # the preset's grids, its arms
    lrs = args.lrs if args.lrs is not None else (preset.lrs if own else None)
    wds = args.wds if args.wds is not None else (preset.weight_decays if own else None)
    sizes = args.train_sizes or preset.train_sizes
    widths = args.widths or preset.widths
    variants = len(sizes or (1,)) * len(widths or (1,))
    import jax

    command = ("python -m wdchain.ablate " + shlex.join(given)).strip()
    total = len(arms) * len(seeds) * variants * task.epochs
    terminal = sys.stderr.isatty()
    lines = _ChunkLines(total) if not terminal and jax.process_index() == 0 else None
    quiet = jax.process_index() != 0  # progress once, from the primary process
    with tqdm(total=total, unit="epoch", file=sys.stderr,
              disable=True if quiet else None) as bar:
        reached: dict[tuple[str, int], int] = {}

        def on_chunk(arm: str, seed: int, epochs: int) -> None:
            bar.set_description(f"{arm} seed {seed}")
            bar.update(epochs)
            reached[arm, seed] = reached.get((arm, seed), 0) + epochs
            if lines is not None:
                lines(arm, seed, epochs, reached[arm, seed], task.epochs)

        try:
            rows = sweep(task, arms=arms, lrs=lrs, weight_decays=wds, seeds=seeds,
                         train_sizes=sizes, widths=widths, report=False,
                         out=args.out, fresh=args.fresh, grid_size=grid_size,
                         layout=args.layout or (preset.layout if args.cells_per_program is None
                                                and args.task is None else None),
                         cells_per_program=args.cells_per_program,
                         seeds_per_program=args.seeds_per_program,
                         log=lambda line: tqdm.write(line, file=sys.stderr), on_chunk=on_chunk)
        except Interrupted:
            bar.close()
            print(f"interrupted: {args.out}/ holds the checkpoints; run the same command to "
                  f"resume: {command}", file=sys.stderr)
            raise SystemExit(130) from None
        except CheckpointWriteError as error:
            bar.close()
            print(f"wdchain-ablate: error: {error}", file=sys.stderr)
            raise SystemExit(1) from None
        except (TypeError, ValueError) as error:
            bar.close()
            parse.error(str(error))

    if jax.process_index() != 0:
        return  # the primary process writes the outputs
    info: dict[str, Any] = run_info(task, seeds, len(jax.devices()))
    info["command"] = command
    if not args.no_trajectories and (sizes or widths):
        print("trajectories skipped: the run has a train-size or width axis", file=sys.stderr)
    summary, written = write_outputs(task, rows, info, args.out,
                                     trajectories=not args.no_trajectories)
    print(summary)
    count = len(arms) * variants
    heatmaps = f"{count} heatmap{'s' if count != 1 else ''}"
    print(f"wrote {', '.join(written)} and {heatmaps} to {args.out}/")
