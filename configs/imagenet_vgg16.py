"""Simonyan & Zisserman 2015 (Very deep convolutional networks for large-scale image
recognition): VGG-16, configuration D, on ILSVRC-2012, sec. 3.

    python -m cnnjax.data.prepare imagenet2012 --source=DIR_WITH_THE_TARS
    python launch.py --config=configs/imagenet_vgg16.py --workdir=runs/imagenet_vgg16
    python launch.py --config=configs/imagenet_vgg16.py:fp32 --workdir=runs/vgg16_fp32

Published, not measured here: 24.8% top-1 / 7.5% top-5 validation error for D trained with
S in [256, 512] and tested at scales {256, 384, 512} (Table 4); a single central 224 crop, as
evaluated here, is not among the paper's protocols (it used dense evaluation).
`configs/imagenet_vgg16.py:smoke` trains 2 steps on synthetic 32x32 images for the tests; a slow
test (138M parameters).
"""

import ml_collections

from cnnjax.data.augment import IMAGENET_MEAN, IMAGENET_STD
from cnnjax.train.optim import optimizer_config

VARIANTS = ("smoke", "fp32")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0

    # Data (sec. 3.1): multi-scale training, "each training image is individually rescaled by
    # randomly sampling S from a certain range [Smin, Smax] (we used Smin = 256 and Smax =
    # 512)", a random 224x224 crop, "random horizontal flipping and random RGB colour shift"
    # (AlexNet's PCA noise); "subtracting the mean RGB value" (per-channel mean/std here). The
    # paper fine-tuned its multi-scale models from one trained at S = 384; from scratch here.
    c.dataset = ml_collections.ConfigDict()
    c.dataset.name = "imagenet2012"
    c.dataset.data_dir = ""  # "" = $TFDS_DATA_DIR or ~/tensorflow_datasets
    c.dataset.train_split = "train"
    c.dataset.eval_split = "validation"
    c.dataset.options = ml_collections.ConfigDict({
        "image_size": 224, "train_crop": "scale_jitter", "scale_range": (256, 512),
        "eval_crop": "center"})
    c.dataset.augment = "lighting"
    c.dataset.augment_on = "device"  # in the train step, on the uint8 views' floats
    c.dataset.mix = "none"
    c.dataset.mix_alpha = 0.0
    c.dataset.pad_to = 0
    c.dataset.mean = IMAGENET_MEAN
    c.dataset.std = IMAGENET_STD
    c.dataset.flip_tta = False
    c.batch_size = 256  # sec. 3.1: "the batch size was set to 256"
    # sec. 3.1: "learning was stopped after 370K iterations (74 epochs)".
    c.num_epochs = 74.0
    c.num_train_steps = -1

    # Model: configuration D, no batch norm, "dropout regularisation for the first two
    # fully-connected layers (dropout ratio set to 0.5)".
    c.model = ml_collections.ConfigDict()
    c.model.name = "vgg16"
    c.model.kernels = "auto"  # cnnjax.kernels.dispatch: Pallas on a GPU, oneDNN on an x86-64 CPU
    c.model.dropout_rate = 0.5
    # Mixed precision, as the papers' float32 would be run on today's accelerators: bfloat16
    # activations and convolutions; float32 parameters, logits and batch-norm statistics.
    # `:fp32` trains in float32 throughout.
    c.dtype = "bfloat16"
    c.remat = False
    c.per_device_batch_norm = False  # no batch norm

    # Optimiser (sec. 3.1): "momentum to 0.9", "weight decay (the L2 penalty multiplier set to
    # 5 x 10^-4)", lr 10^-2 "decreased by a factor of 10 when the validation set accuracy stopped
    # improving. In total, the learning rate was decreased 3 times": reduce-on-plateau of the
    # epoch-averaged training loss here (patience 5 epochs chosen here), at most 3 reductions.
    c.optimizer = optimizer_config(
        "sgd",
        learning_rate=0.01,
        momentum=0.9,
        nesterov=False,
        weight_decay=5e-4,
        decoupled_weight_decay=False,  # an L2 penalty
        # Not stated in the paper: biases exempt, as in the Caffe reference ImageNet nets of
        # the time (bvlc_alexnet, bvlc_googlenet: decay_mult 0 on biases). No batch norm.
        decay_norm_and_bias=False,
    )
    c.schedule = ml_collections.ConfigDict()
    c.schedule.name = "reduce_on_plateau"
    c.schedule.factor = 0.1
    c.schedule.patience = 5
    c.schedule.min_scale = 1e-3
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
        raise ValueError(f"configs/imagenet_vgg16.py takes no argument, 'smoke' or "
                         f"'fp32', got {arg!r}")
    return c
