"""Sigmoid vs tanh vs ReLU vs ELU vs SELU in a deep plain CNN on MNIST: the vanishing-gradient
lesson, measured.

    python launch.py --config=configs/activations.py:act=sigmoid --workdir=runs/act_sigmoid
    python launch.py --config=configs/activations.py --sweep --workdir=runs/activations

A 12-layer plain CNN (cnnjax.models.plain_cnn: no batch norm, no shortcuts) with each activation
and the initialiser its paper prescribes. experiments/activations reports the per-layer gradient
norms at initialisation (`python experiments/activations/grad_norms.py`) and the learning curves
(`python -m cnnjax.sweep summarize runs/activations`). Expected from the lectures: sigmoid trains
slowly or not at all (its derivative is at most 1/4, so gradients shrink layer by layer); ReLU,
ELU and SELU train; tanh in between.
`configs/activations.py:smoke` trains a few steps on synthetic data for the tests.
"""

import ml_collections

from cnnjax.sweep import product
from cnnjax.train.optim import optimizer_config

ACTIVATIONS = ("sigmoid", "tanh", "relu", "elu", "selu")
VARIANTS = ("smoke", "act=sigmoid")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    act, smoke = "relu", False
    for part in filter(None, (arg or "").split(",")):
        key, _, value = part.partition("=")
        if key == "act" and value in ACTIVATIONS:
            act = value
        elif part == "smoke":
            smoke = True
        else:
            raise ValueError(f"configs/activations.py: bad argument {part!r}; expected "
                             f"act={'|'.join(ACTIVATIONS)} and/or smoke")
    c = ml_collections.ConfigDict()
    c.seed = 0

    # Data: MNIST, normalised, no augmentation.
    c.dataset = ml_collections.ConfigDict()
    c.dataset.name = "mnist"
    c.dataset.data_dir = ""
    c.dataset.train_split = "train"
    c.dataset.eval_split = "test"
    c.dataset.augment = "none"
    c.dataset.augment_on = "host"
    c.dataset.mix = "none"
    c.dataset.mix_alpha = 0.0
    c.dataset.mean = (0.1307,)
    c.dataset.std = (0.3081,)
    # 500 steps of 64 (32,000 images, about half an epoch): the curves separate within the first
    # hundred steps, and the run fits a 2-core CPU budget (about 4 minutes per activation).
    c.batch_size = 64
    c.num_epochs = 1.0
    c.num_train_steps = 500

    # Model: 12 convolutions in 3 stages of 16-32-64 channels.
    c.model = ml_collections.ConfigDict()
    c.model.name = "plain_cnn"
    c.model.depth = 12
    c.model.width = 16
    c.model.activation = act
    c.model.kernels = "auto"  # cnnjax.kernels.dispatch: Pallas on a GPU, oneDNN on an x86-64 CPU
    c.dtype = "float32"
    c.remat = False
    c.per_device_batch_norm = False

    # Optimiser: plain SGD with momentum and one rate for all, so only the activation differs.
    c.optimizer = optimizer_config(
        "sgd",
        learning_rate=0.02,
        momentum=0.9,
        nesterov=False,
        decay_norm_and_bias=False,  # moot: no weight decay (weight_decay 0)
    )
    c.schedule = ml_collections.ConfigDict()
    c.schedule.name = "constant"

    # Evaluation every 100 steps (on the 10,000 test images) for the learning curves.
    c.log_every_steps = 50
    c.eval_every_steps = 100
    c.checkpoint_every_steps = 500
    c.keep_checkpoints = 1

    if smoke:
        c.dataset.name = "synthetic"
        c.dataset.options = ml_collections.ConfigDict(
            {"image_shape": (28, 28, 1), "num_classes": 10, "num_examples": 128})
        c.batch_size = 32
        c.num_train_steps = 4
        c.log_every_steps = c.eval_every_steps = c.checkpoint_every_steps = 4
    return c


def get_sweep(arg: str | None = None) -> list[dict]:
    """Every activation at two rates, one seed: the learning-curve comparison. At the higher rate
    the fast learners move furthest in 500 steps; the lower one shows which activations need it
    to train at all (an ELU net of this depth diverges at 0.02)."""
    del arg
    return product(**{"model.activation": list(ACTIVATIONS),
                      "optimizer.learning_rate": [0.02, 0.005]})
