"""The command line: check every argument, then train each arm's grid and report."""

from __future__ import annotations

import argparse
import math
import shlex
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

import wdchain
from wdchain.ablate._arms import DEFAULT_ARMS, Arm, default_grids_text, parse_arm
from wdchain.ablate._grid import GridProgram
from wdchain.ablate._report import (
    ArmResult,
    best_cell,
    summary_markdown,
    write_csv,
    write_heatmap,
)
from wdchain.ablate._task import MODELS, Digits, load_digits

DEFAULT_EPOCHS = 60


def _arms(text: str) -> list[Arm]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise argparse.ArgumentTypeError("give at least one arm, e.g. --arms adam-l2,adamw")
    try:
        return [parse_arm(name) for name in dict.fromkeys(names)]
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _grid(text: str) -> np.ndarray:
    try:
        values = [float(item) for item in text.split(",") if item.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers, e.g. 1e-3,1e-2, got {text!r}"
        ) from None
    if not values:
        raise argparse.ArgumentTypeError(f"the grid is empty ({text!r}): give at least one value")
    bad = [value for value in values if not (math.isfinite(value) and value > 0)]
    if bad:
        raise argparse.ArgumentTypeError(
            f"grid values must be finite and > 0 (the grid is log-spaced), got {bad[0]!r}"
        )
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


_positive_int = _int_at_least(1)


def _writable_folder(text: str) -> Path:
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


def parser() -> argparse.ArgumentParser:
    """The runner's arguments."""
    parse = argparse.ArgumentParser(
        prog="wdchain-ablate",
        description="Train a Flax model on scikit-learn's digits for every learning rate × "
        "weight decay of each arm (one vmapped program per arm) and compare the arms.",
        epilog=default_grids_text(),
    )
    parse.add_argument("--arms", type=_arms, default=[parse_arm(n) for n in DEFAULT_ARMS],
                       help=f"comma-separated arms (default {','.join(DEFAULT_ARMS)}); "
                       "<preconditioner>-<decay>, or adamw, adamw-independent, sgdw")
    parse.add_argument("--lrs", type=_grid, default=None,
                       help="comma-separated peak learning rates (default: per-arm grid)")
    parse.add_argument("--wds", type=_grid, default=None,
                       help="comma-separated weight decays (default: per-arm grid)")
    parse.add_argument("--epochs", type=_positive_int, default=DEFAULT_EPOCHS,
                       help=f"epochs per cell (default {DEFAULT_EPOCHS})")
    parse.add_argument("--model", choices=sorted(MODELS), default="mlp",
                       help="the Flax NNX model (default mlp)")
    parse.add_argument("--seed", type=_int_at_least(0), default=0,
                       help="data split, initial weights and batch order (default 0)")
    parse.add_argument("--out", type=_writable_folder, default="results",
                       help="output folder (default results/)")
    return parse


def _run_arm(arm: Arm, args: argparse.Namespace, data: Digits, on_epoch) -> ArmResult:
    """Trains the arm's whole grid as one program; labels it with its best cell's recipe."""
    lrs = arm.default_lrs() if args.lrs is None else args.lrs
    wds = arm.default_wds() if args.wds is None else args.wds
    cell_lrs, cell_wds = (grid.ravel() for grid in np.meshgrid(lrs, wds, indexing="ij"))
    program = GridProgram(arm, args.model, data, epochs=args.epochs, seed=args.seed)
    metrics = program.run(cell_lrs, cell_wds, on_epoch=on_epoch)
    shape = (len(lrs), len(wds))
    result = ArmResult(arm, lrs, wds, *(metric.reshape(shape) for metric in metrics), recipe="")
    i, j = best_cell(result)
    recipe = wdchain.describe(program.optimizer(float(lrs[i]), float(wds[j])))
    return result._replace(recipe=" — ".join(recipe.splitlines()[:2]))


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m wdchain.ablate`` / ``wdchain-ablate``; see ``--help``."""
    from tqdm import tqdm

    args = parser().parse_args(argv)
    data = load_digits(args.seed)
    results = []
    with tqdm(total=len(args.arms) * args.epochs, unit="epoch", file=sys.stderr) as bar:
        for arm in args.arms:
            bar.set_description(arm.name)
            results.append(_run_arm(arm, args, data, on_epoch=lambda: bar.update(1)))
    write_csv(results, args.out / "results.csv")
    for result in results:
        write_heatmap(result, args.out / f"heatmap_{result.arm.name}.png")
    command = "python -m wdchain.ablate " + shlex.join(sys.argv[1:] if argv is None else argv)
    summary = summary_markdown(results, command.strip())
    (args.out / "summary.md").write_text(summary)
    print(summary)
    print(f"wrote results.csv, summary.md and {len(results)} heatmaps to {args.out}/")
