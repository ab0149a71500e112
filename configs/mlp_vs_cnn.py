"""The lectures' argument for convolutions, measured: an MLP and a CNN of similar parameter budget.

    python launch.py --config=configs/mlp_vs_cnn.py:model=mlp,dataset=mnist --workdir=runs/mlp_mnist
    python launch.py --config=configs/mlp_vs_cnn.py:model=cnn,dataset=mnist --workdir=runs/cnn_mnist
    (dataset=cifar10 for the CIFAR-10 pair, a few epochs)

The MLP sees every pixel with its own weight and has no notion of locality; the CNN shares 3x3
filters across positions. Parameter budgets matched within 1%: on MNIST the MLP 784-256-256-10
has 269,322 and the CNN (simple_cnn: conv 32, conv 64, dense 80) 270,586; on CIFAR-10 the MLP
855,050 and the CNN (dense 200) 840,802. experiments/mlp_vs_cnn
reports their test accuracy and the accuracy on test images shifted by 1-4 pixels
(`python -m cnnjax.analysis.visualize --what=equivariance`).
`configs/mlp_vs_cnn.py:smoke` trains a few steps on synthetic data for the tests.
"""

import ml_collections
from cnnjax.train.optim import optimizer_config

VARIANTS = ("smoke", "model=cnn,dataset=cifar10")
DATASETS = {"mnist": ((28, 28, 1), (0.1307,), (0.3081,), 10.0),
            # CIFAR-10's published per-channel statistics.
            "cifar10": ((32, 32, 3), (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), 5.0)}


def _parse(arg: str | None) -> dict:
    out = {"model": "mlp", "dataset": "mnist", "smoke": False}
    for part in filter(None, (arg or "").split(",")):
        key, _, value = part.partition("=")
        if key == "model" and value in ("mlp", "cnn"):
            out["model"] = value
        elif key == "dataset" and value in DATASETS:
            out["dataset"] = value
        elif part == "smoke":
            out["smoke"] = True
        else:
            raise ValueError(f"configs/mlp_vs_cnn.py: bad argument {part!r}; expected "
                             f"model=mlp|cnn, dataset={'|'.join(DATASETS)}, smoke")
    return out


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    a = _parse(arg)
    shape, mean, std, epochs = DATASETS[a["dataset"]]
    c = ml_collections.ConfigDict()
    c.seed = 0

    # Data: the standard splits, no augmentation (the point is what the architecture learns).
    c.dataset = ml_collections.ConfigDict()
    c.dataset.name = a["dataset"]
    c.dataset.data_dir = ""
    c.dataset.train_split = "train"
    c.dataset.eval_split = "test"
    c.dataset.augment = "none"
    c.dataset.augment_on = "host"
    c.dataset.mix = "none"
    c.dataset.mix_alpha = 0.0
    c.dataset.mean = mean
    c.dataset.std = std
    c.batch_size = 128
    c.num_epochs = epochs
    c.num_train_steps = -1

    # Model: the same parameter budget (see the docstring).
    c.model = ml_collections.ConfigDict()
    if a["model"] == "mlp":
        c.model.name = "mlp"
        c.model.hidden = (256, 256)
    else:
        c.model.name = "simple_cnn"
        c.model.widths = (32, 64)
        c.model.hidden = 80 if a["dataset"] == "mnist" else 200
    c.model.dropout_rate = 0.0
    c.model.kernels = "auto"  # cnnjax.kernels.dispatch: Pallas on a GPU, oneDNN on an x86-64 CPU
    c.dtype = "float32"
    c.remat = False
    c.per_device_batch_norm = False

    # Optimiser: the same for both, Adam with cosine decay.
    c.optimizer = optimizer_config(
        "adam",
        learning_rate=1e-3,
        decoupled_weight_decay=True,
        decay_norm_and_bias=False,  # moot: no weight decay (weight_decay 0)
    )
    c.schedule = ml_collections.ConfigDict()
    c.schedule.name = "warmup_cosine"
    c.schedule.warmup_epochs = 0.5

    # Evaluation, logging and checkpoints.
    c.log_every_steps = 100
    c.eval_every_steps = 469 if a["dataset"] == "mnist" else 390  # once per epoch
    c.checkpoint_every_steps = c.eval_every_steps
    c.keep_checkpoints = 1

    if a["smoke"]:
        c.dataset.name = "synthetic"
        c.dataset.options = ml_collections.ConfigDict(
            {"image_shape": shape, "num_classes": 10, "num_examples": 128})
        c.batch_size = 32
        c.num_epochs = 1.0
        c.log_every_steps = c.eval_every_steps = c.checkpoint_every_steps = 4
    return c
