"""Default experiment: a LeNet-5-style CNN on scikit-learn's 8x8 handwritten digits.

    python launch.py --config=configs/default.py --workdir=runs/default
    make run                     # the same, after creating .venv

Needs no download (the 1,797 digits ship with scikit-learn; fixed 1,437 / 360 split, see
cnnjax/data/digits.py). Reaches >= 97% test accuracy in well under 3 minutes on 2 CPU cores;
the measured figure is in experiments/digits_default/README.md.
`configs/default.py:smoke` runs a few steps for the tests.

    python launch.py --config=configs/default.py --search --workdir=searches/default --parallel=2
runs the Optuna search of get_search() (see README, "Hyperparameter search").
"""

import ml_collections

from cnnjax.sweep import product
from cnnjax.train.optim import optimizer_config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0

    # Data.
    c.dataset = ml_collections.ConfigDict()
    c.dataset.name = "digits"
    c.dataset.data_dir = ""  # in-memory dataset: no data_dir
    c.dataset.augment = "none"  # a name in cnnjax.data.augment.HOST_AUGMENTS, e.g. "pad_crop"
    c.dataset.augment_pad = 4  # pixels of zero padding before the random crop
    c.dataset.augment_on = "host"  # or "device": inside the jitted train step
    c.dataset.mix = "none"  # "mixup" or "cutmix", on the device, with mix_alpha > 0
    c.dataset.mix_alpha = 0.0
    c.dataset.pad_to = 0  # zero-pad images to pad_to x pad_to on the device; 0 = keep
    c.dataset.mean = ()  # per-channel normalisation on the device; () = none
    c.dataset.std = ()
    c.dataset.flip_tta = False  # evaluate each image and its mirror image, averaging
    c.batch_size = 64
    c.num_epochs = 40
    c.num_train_steps = -1  # -1: num_epochs * steps_per_epoch

    # Model.
    c.model = ml_collections.ConfigDict()
    c.model.name = "simple_cnn"
    c.model.dropout_rate = 0.25
    c.model.batch_norm = False
    c.model.kernels = "auto"  # cnnjax.kernels.dispatch: Pallas on a GPU, oneDNN on an x86-64 CPU
    c.dtype = "float32"
    c.remat = False
    c.per_device_batch_norm = False

    # Optimiser: SGD with Nesterov momentum and coupled L2, cosine decay after a short warm-up.
    c.optimizer = optimizer_config(
        "sgd",
        learning_rate=0.05,
        momentum=0.9,
        nesterov=True,
        weight_decay=5e-4,
        decay_norm_and_bias=False,  # kernels only ("no bias decay", He et al. 2019, sec. 3.1)
    )
    c.schedule = ml_collections.ConfigDict()
    c.schedule.name = "warmup_cosine"
    c.schedule.warmup_epochs = 1.0

    # Evaluation, logging and checkpoints.
    c.log_every_steps = 50
    c.eval_every_steps = 220  # every 10 epochs of 22 steps
    c.checkpoint_every_steps = 220
    c.keep_checkpoints = 2

    if arg == "smoke":
        c.num_epochs = 2
        c.log_every_steps = 10
        c.eval_every_steps = 22
        c.checkpoint_every_steps = 22
    elif arg:
        raise ValueError(f"configs/default.py takes no argument or 'smoke', got {arg!r}")
    return c


def get_sweep(arg: str | None = None) -> list[dict]:
    """Learning rate x seed, 4 points: `launch.py --config=configs/default.py --sweep --workdir=ROOT`."""
    del arg  # the same grid for every variant
    return product(**{"optimizer.learning_rate": [0.02, 0.05], "seed": [0, 1]})


def get_search(arg: str | None = None):
    """TPE over learning rate, weight decay and dropout, 16 trials, successive halving at the
    evaluations. The learning-rate range is wide on purpose: its top part diverges (rates of 1
    and above stay at chance accuracy in tests/test_sweep_search.py's 24-step runs), which the
    pruner stops at the first evaluations."""
    from cnnjax.sweep.search_space import Search, log_uniform, uniform  # imports Optuna

    first_eval = get_config(arg).eval_every_steps
    return Search(
        space={"optimizer.learning_rate": log_uniform(1e-3, 10.0),
               "optimizer.weight_decay": log_uniform(1e-5, 1e-2),
               "model.dropout_rate": uniform(0.0, 0.5)},
        objective="accuracy", direction="maximize", sampler="tpe", num_trials=16,
        pruner="successive_halving",
        # Rungs at the first evaluation and every 3x after it; a trial goes on when it is in
        # the top third of the trials that reached its rung.
        pruner_kwargs={"min_resource": first_eval, "reduction_factor": 3})
