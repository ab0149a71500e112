"""Test accuracy of trained runs when every test image is shifted by a few pixels.

    TFDS_DATA_DIR=... python experiments/mlp_vs_cnn/shifted_accuracy.py \
        --workdir=runs/mlp_mnist --workdir=runs/cnn_mnist [--shifts=0,1,2,3,4] [--out=FILE.md]

Each run (a launch.py workdir) is restored at its latest checkpoint; its test images, in stored
pixels, are moved right and down by s pixels (zero-filled, i.e. black enters: the background of
MNIST) and then padded/normalised as the run's evaluation does. Prints and writes a Markdown
table: run, parameters, test accuracy at each shift.
"""

from __future__ import annotations

import argparse
import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from cnnjax.analysis.equivariance import translate  # noqa: E402
from cnnjax.analysis.visualize import eval_preprocess, load_run  # noqa: E402


def shifted_accuracies(workdir: str, shifts: list[int]) -> tuple[int, list[float]]:
    """(parameter count, test accuracy for each diagonal shift in `shifts`) of one run."""
    run = load_run(workdir, max_train=1, preprocess=False)
    params = sum(int(np.prod(v.shape)) for v in jax.tree_util.tree_leaves(run.variables["params"]))
    logits = jax.jit(run.logits_fn())
    x, y = run.test
    accuracies = []
    for s in shifts:
        moved = translate(translate(x, s, axis=2), s, axis=1)
        model_input = eval_preprocess(run.config, moved)
        predictions = np.concatenate([np.argmax(np.asarray(logits(jnp.asarray(chunk))), -1)
                                      for chunk in np.array_split(model_input, 20)])
        accuracies.append(float(np.mean(predictions == y)))
    return params, accuracies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", action="append", required=True)
    parser.add_argument("--shifts", default="0,1,2,3,4")
    parser.add_argument("--out", default=None, help="Markdown file to write (default: print only)")
    args = parser.parse_args()
    shifts = [int(s) for s in args.shifts.split(",")]
    rows = ["| run | parameters | " + " | ".join(f"shift {s} px" for s in shifts) + " |",
            "|---" * (len(shifts) + 2) + "|"]
    for workdir in args.workdir:
        params, accuracies = shifted_accuracies(workdir, shifts)
        rows.append(f"| {pathlib.Path(workdir).name} | {params:,} | "
                    + " | ".join(f"{100 * a:.2f}%" for a in accuracies) + " |")
        print(rows[-1], flush=True)
    table = "\n".join(rows) + "\n"
    print(table)
    if args.out:
        pathlib.Path(args.out).write_text(table)


if __name__ == "__main__":
    main()
