"""Krizhevsky, Sutskever & Hinton 2012 (ImageNet classification with deep convolutional neural
networks): AlexNet on ILSVRC-2012, sec. 4-5.

    python -m cnnjax.data.prepare imagenet2012 --source=DIR_WITH_THE_TARS
    python launch.py --config=configs/imagenet_alexnet.py --workdir=runs/imagenet_alexnet
    python launch.py --config=configs/imagenet_alexnet.py:fp32 --workdir=runs/alexnet_fp32

Published, not measured here: 40.7% top-1 / 18.2% top-5 error on the validation set for one CNN
(Table 2), predictions averaged over 10 patches (sec. 4.1).
`configs/imagenet_alexnet.py:smoke` trains 2 steps on synthetic 227x227 images (the only size
the paper's fc6 accepts) for the tests; a slow test (61M parameters).
"""

import ml_collections

from cnnjax.data.augment import IMAGENET_MEAN, IMAGENET_STD
from cnnjax.train.optim import optimizer_config

VARIANTS = ("smoke", "fp32")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0

    # Data (sec. 2, 4.1): images rescaled to shorter side 256; "random 224x224 patches (and their
    # horizontal reflections)" (227 here, which conv1's arithmetic needs, see cnnjax.models.alexnet;
    # the patches come from the whole rescaled image, not its central 256x256 square); PCA
    # colour noise with alpha ~ N(0, 0.1). Test: "five 224x224 patches (the four corner patches
    # and the center patch) as well as their horizontal reflections", averaged.
    c.dataset = ml_collections.ConfigDict()
    c.dataset.name = "imagenet2012"
    c.dataset.data_dir = ""  # "" = $TFDS_DATA_DIR or ~/tensorflow_datasets
    c.dataset.train_split = "train"
    c.dataset.eval_split = "validation"
    c.dataset.options = ml_collections.ConfigDict({
        "image_size": 227, "train_crop": "scale_jitter", "scale_range": (256, 256),
        "eval_crop": "ten_crop"})
    c.dataset.augment = "lighting"
    c.dataset.augment_on = "device"  # in the train step, on the uint8 views' floats
    c.dataset.mix = "none"
    c.dataset.mix_alpha = 0.0
    c.dataset.pad_to = 0
    # "subtracting the mean activity over the training set from each pixel": per-channel
    # mean/std here.
    c.dataset.mean = IMAGENET_MEAN
    c.dataset.std = IMAGENET_STD
    c.dataset.flip_tta = False
    c.batch_size = 128  # sec. 5: "batch size of 128 examples"
    c.num_epochs = 90.0  # sec. 5: "roughly 90 cycles through the training set"
    c.num_train_steps = -1

    # Model: the paper's two-tower network (groups=2), LRN, dropout 0.5 in fc6/fc7, its init.
    c.model = ml_collections.ConfigDict()
    c.model.name = "alexnet"
    c.model.kernels = "auto"  # cnnjax.kernels.dispatch: Pallas on a GPU, oneDNN on an x86-64 CPU
    c.model.dropout_rate = 0.5  # sec. 4.2
    # Mixed precision, as the papers' float32 would be run on today's accelerators: bfloat16
    # activations and convolutions; float32 parameters, logits and batch-norm statistics.
    # `:fp32` trains in float32 throughout.
    c.dtype = "bfloat16"
    c.remat = False
    c.per_device_batch_norm = False  # no batch norm

    # Optimiser (sec. 5): SGD, momentum 0.9, weight decay 0.0005 on every weight, lr 0.01
    # "divided by 10 when the validation error rate stopped improving", "reduced three times":
    # reduce-on-plateau of the epoch-averaged training loss here (patience 5 epochs is chosen
    # here), at most three reductions (min_scale 1e-3).
    c.optimizer = optimizer_config(
        "sgd",
        learning_rate=0.01,
        momentum=0.9,
        nesterov=False,
        weight_decay=5e-4,
        decoupled_weight_decay=False,  # the update rule's -0.0005 eps w term
        # Weights only: cuda-convnet's layer files give a weight cost (wc) to weights, none to
        # biases (as Caffe's bvlc_alexnet: decay_mult 0 on biases). No normalisation layers
        # with parameters (LRN has none).
        decay_norm_and_bias=False,
    )
    c.schedule = ml_collections.ConfigDict()
    c.schedule.name = "reduce_on_plateau"
    c.schedule.factor = 0.1
    c.schedule.patience = 5
    c.schedule.min_scale = 1e-3
    c.schedule.warmup_epochs = 0.0

    # Evaluation (one 10-crop pass over the 50,000 validation images), logging, checkpoints.
    c.log_every_steps = 100
    c.eval_every_steps = 50_000
    c.checkpoint_every_steps = 10_000
    c.keep_checkpoints = 2

    if arg == "smoke":
        c.dataset.name = "synthetic"
        c.dataset.options = ml_collections.ConfigDict(
            {"image_shape": (227, 227, 3), "num_classes": 1000, "num_examples": 8})
        c.batch_size = 4
        c.num_epochs = 0.0
        c.num_train_steps = 2
        c.log_every_steps = c.eval_every_steps = c.checkpoint_every_steps = 2
    elif arg == "fp32":
        c.dtype = "float32"
    elif arg:
        raise ValueError(f"configs/imagenet_alexnet.py takes no argument, 'smoke' or "
                         f"'fp32', got {arg!r}")
    return c
