"""Per-layer gradient norms at initialisation of the deep plain CNN, for each activation.

    TFDS_DATA_DIR=... python experiments/activations/grad_norms.py [--batch=256] [--out=DIR]

Builds configs/activations.py's model for every activation, initialises it as the config does,
and measures ||dL/dW|| of every convolution's kernel on one batch of MNIST training images
(normalised as the config does), averaged over --seeds initialisations. Writes grad_norms.md (a
table, layers as rows) and grad_norms.png (log-scale norms against depth) to --out.
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

from cnnjax import data, models, ops  # noqa: E402
from cnnjax.data.device_pipeline import from_config  # noqa: E402
from cnnjax.sweep.config_file import load_module  # noqa: E402
from cnnjax.train.trainer import model_overrides  # noqa: E402

CONFIG = load_module(ROOT / "configs" / "activations.py")


def layer_grad_norms(activation: str, images: jax.Array, labels: jax.Array, seed: int) -> list[float]:
    """||dL/dW|| of conv1..convD's kernels at initialisation, L the mean cross-entropy."""
    c = CONFIG.get_config(f"act={activation}")
    model = models.create(c.model.name, num_classes=10, **model_overrides(c))
    params = model.init(jax.random.PRNGKey(seed), images[:1])["params"]
    loss = lambda p: jnp.mean(ops.softmax_cross_entropy(model.apply({"params": p}, images), labels))
    grads = jax.jit(jax.grad(loss))(params)
    return [float(jnp.linalg.norm(grads[f"conv{i}"]["kernel"]))
            for i in range(1, c.model.depth + 1)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--out", default=str(pathlib.Path(__file__).resolve().parent))
    args = parser.parse_args()
    c = CONFIG.get_config()
    source = data.create("mnist", "train", batch_size=args.batch, train=True, seed=0,
                         data_dir=c.dataset.data_dir or None)
    batch = next(source.batches())
    images = from_config(c.dataset, 10).eval(jnp.asarray(batch["image"]))
    labels = jnp.asarray(batch["label"])
    norms = {a: np.mean([layer_grad_norms(a, images, labels, s) for s in range(args.seeds)], 0)
             for a in CONFIG.ACTIVATIONS}
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = ["| layer | " + " | ".join(norms) + " |", "|---" * (len(norms) + 1) + "|"]
    depth = len(next(iter(norms.values())))
    for i in range(depth):
        rows.append(f"| conv{i + 1} | " + " | ".join(f"{norms[a][i]:.3g}" for a in norms) + " |")
    rows.append("| conv1 / conv%d | " % depth +
                " | ".join(f"{norms[a][0] / norms[a][-1]:.3g}" for a in norms) + " |")
    (out / "grad_norms.md").write_text("\n".join(rows) + "\n")
    print("\n".join(rows))

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4))
    for a, n in norms.items():
        ax.semilogy(range(1, depth + 1), n, marker="o", label=a)
    ax.set_xlabel("convolution (1 = next to the input)")
    ax.set_ylabel("||dL/dW|| at initialisation")
    ax.set_title(f"Plain {depth}-layer CNN on MNIST, batch {args.batch}, {args.seeds} inits")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "grad_norms.png", dpi=120)


if __name__ == "__main__":
    main()
