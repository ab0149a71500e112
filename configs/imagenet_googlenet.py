"""Szegedy et al. 2015 (Going deeper with convolutions): GoogLeNet on ILSVRC-2012, sec. 5-7.

    python -m cnnjax.data.prepare imagenet2012 --source=DIR_WITH_THE_TARS
    python launch.py --config=configs/imagenet_googlenet.py --workdir=runs/imagenet_googlenet
    python launch.py --config=configs/imagenet_googlenet.py:fp32 --workdir=runs/googlenet_fp32

Published, not measured here: 10.07% top-5 validation error for one model and one crop (Table 5;
9.15% with 10 crops, 6.67% top-5 test error for the 7-model 144-crop ensemble, Table 2). The
paper reports no top-1 figure.
`configs/imagenet_googlenet.py:smoke` trains 2 steps on synthetic 32x32 images for the tests.
"""

import ml_collections

from cnnjax.data.augment import IMAGENET_MEAN, IMAGENET_STD
from cnnjax.train.optim import optimizer_config

VARIANTS = ("smoke", "fp32")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0

    # Data (sec. 6): "sampling of various sized patches of the image whose size is distributed
    # evenly between 8% and 100% of the image area and whose aspect ratio is chosen randomly
    # between 3/4 and 4/3" (the Inception crop); its "photometric distortions" are not
    # implemented here. Evaluation: one central crop of the image resized to 256.
    c.dataset = ml_collections.ConfigDict()
    c.dataset.name = "imagenet2012"
    c.dataset.data_dir = ""  # "" = $TFDS_DATA_DIR or ~/tensorflow_datasets
    c.dataset.train_split = "train"
    c.dataset.eval_split = "validation"
    c.dataset.options = ml_collections.ConfigDict({
        "image_size": 224, "train_crop": "inception", "eval_crop": "center"})
    c.dataset.augment = "none"
    c.dataset.augment_on = "host"
    c.dataset.mix = "none"
    c.dataset.mix_alpha = 0.0
    c.dataset.pad_to = 0
    c.dataset.mean = IMAGENET_MEAN  # sec. 5: "mean subtraction"; per-channel mean/std here
    c.dataset.std = IMAGENET_STD
    c.dataset.flip_tta = False
    c.batch_size = 256  # not stated in the paper (asynchronous DistBelief training): chosen here
    c.num_epochs = 90.0  # not stated in the paper: chosen here
    c.num_train_steps = -1

    # Model (sec. 5): Table 1's network, dropout 40% before the classifier, two auxiliary
    # classifiers (dropout 70%) whose losses count with weight 0.3 (the train step's).
    c.model = ml_collections.ConfigDict()
    c.model.name = "googlenet"
    c.model.kernels = "auto"  # cnnjax.kernels.dispatch: Pallas on a GPU, oneDNN on an x86-64 CPU
    c.model.aux_logits = True
    c.model.dropout_rate = 0.4
    c.model.aux_dropout_rate = 0.7
    # Mixed precision, as the papers' float32 would be run on today's accelerators: bfloat16
    # activations and convolutions; float32 parameters, logits and batch-norm statistics.
    # `:fp32` trains in float32 throughout.
    c.dtype = "bfloat16"
    c.remat = False
    c.per_device_batch_norm = False  # no batch norm

    # Optimiser (sec. 6): "asynchronous stochastic gradient descent with 0.9 momentum, fixed
    # learning rate schedule (decreasing the learning rate by 4% every 8 epochs)", "Polyak
    # averaging" for the final model (an exponential moving average of the weights here).
    # The initial rate, weight decay and averaging rate are not stated: chosen here.
    c.optimizer = optimizer_config(
        "sgd",
        learning_rate=0.01,
        momentum=0.9,
        nesterov=False,
        weight_decay=2e-4,
        ema_decay=0.9999,
        # Not stated in the paper: biases exempt, as in the Caffe model zoo's bvlc_googlenet
        # reproduction (decay_mult 0 on biases). No batch norm.
        decay_norm_and_bias=False,
    )
    c.schedule = ml_collections.ConfigDict()
    c.schedule.name = "exponential"
    c.schedule.decay_rate = 0.96
    c.schedule.decay_epochs = 8.0
    c.schedule.staircase = True
    c.schedule.warmup_epochs = 0.0

    # Evaluation, logging and checkpoints.
    c.log_every_steps = 100
    c.eval_every_steps = 25_000
    c.checkpoint_every_steps = 5_000
    c.keep_checkpoints = 2

    if arg == "smoke":
        c.dataset.name = "synthetic"
        c.dataset.options = ml_collections.ConfigDict(
            {"image_shape": (32, 32, 3), "num_classes": 1000, "num_examples": 8})
        c.batch_size = 4
        c.num_epochs = 0.0
        c.num_train_steps = 2
        c.log_every_steps = c.eval_every_steps = c.checkpoint_every_steps = 2
    elif arg == "fp32":
        c.dtype = "float32"
    elif arg:
        raise ValueError(f"configs/imagenet_googlenet.py takes no argument, 'smoke' or "
                         f"'fp32', got {arg!r}")
    return c
