"""Do a run's verdicts survive a change of rounding? The default run, twice, compared.

    python benchmarks/verdicts.py [--out /tmp/verdicts] [-- extra wdchain.ablate arguments]
    python benchmarks/verdicts.py --compare results/ other_results/

Runs ``python -m wdchain.ablate`` as given, then again with its cells split over two
simulated CPU devices (``XLA_FLAGS=--xla_force_host_platform_device_count=2``): the same
cells and the same sums, only rounded differently (another CPU, another BLAS blocking or
another number of devices does the same). Then it prints each verdict of the summary
(shape of each arm's optimum, whether its selected cell is interior, each arm against its
L2 counterpart) in both runs, and whether it held. A verdict that changes with the
rounding alone is not a result; the README states only those that hold.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from wdchain.ablate import analyse, read_csv
from wdchain.ablate._report import verdicts


def run(out: Path, extra: list[str], devices: int | None) -> None:
    env = dict(os.environ)
    if devices is not None:
        env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") +
                            f" --xla_force_host_platform_device_count={devices}").strip()
    command = [sys.executable, "-m", "wdchain.ablate", "--out", str(out), "--no-trajectories",
               *extra]
    print("running:", " ".join(command), f"({devices or 1} device(s))", flush=True)
    subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL, timeout=7200)


def compare(first: Path, second: Path, test_size: int = 1000) -> bool:
    """Prints the verdicts of two result folders side by side; True when all hold.

    ``test_size``: the test split's examples (1,000 for the built-in MNIST-1D task), for the
    standard error a gap must exceed.
    """
    runs = [verdicts(analyse(read_csv(folder / "results.csv")), test_size)
            for folder in (first, second)]
    held = True
    print(f"| verdict | {first} | {second} | holds |")
    print("|---|---|---|---|")
    for key in dict.fromkeys([*runs[0], *runs[1]]):
        a, b = runs[0].get(key, "–"), runs[1].get(key, "–")
        held &= a == b
        print(f"| {key} | {a} | {b} | {'yes' if a == b else 'NO'} |")
    return held


def main() -> None:
    parse = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parse.add_argument("--out", type=Path, default=Path("/tmp/wdchain-verdicts"))
    parse.add_argument("--compare", nargs=2, type=Path, default=None,
                       help="compare two finished result folders instead of running")
    parse.add_argument("--test-examples", type=int, default=1000,
                       help="the test split's size (1000 for the built-in mnist1d task)")
    parse.add_argument("extra", nargs="*", help="arguments for python -m wdchain.ablate")
    args = parse.parse_args()
    if args.compare:
        first, second = args.compare
    else:
        first, second = args.out / "one_device", args.out / "two_devices"
        run(first, args.extra, None)
        run(second, args.extra, 2)
    sys.exit(0 if compare(first, second, args.test_examples) else 1)


if __name__ == "__main__":
    main()
