"""Sandler et al. 2018 (MobileNetV2: inverted residuals and linear bottlenecks): MobileNetV2 1.0
on ILSVRC-2012 at 224x224, sec. 6.1.

    python -m cnnjax.data.prepare imagenet2012 --source=DIR_WITH_THE_TARS
    python launch.py --config=configs/imagenet_mobilenet_v2.py --workdir=runs/imagenet_mobilenet_v2
    python launch.py --config=configs/imagenet_mobilenet_v2.py:fp32 --workdir=runs/mobilenet_v2_fp32

Published, not measured here: 72.0% top-1 accuracy (Table 4; the paper gives no top-5).
`configs/imagenet_mobilenet_v2.py:smoke` trains 2 steps on synthetic 32x32 images for the tests.
"""

import ml_collections

from cnnjax.data.augment import IMAGENET_MEAN, IMAGENET_STD
from cnnjax.train.optim import optimizer_config

VARIANTS = ("smoke", "fp32")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0

    # Data: the paper names no augmentation; the Inception crop + flip (its TensorFlow code's
    # Inception preprocessing) is used here; evaluation on the central 224 crop of the image
    # resized to 256.
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
    c.dataset.mean = IMAGENET_MEAN
    c.dataset.std = IMAGENET_STD
    c.dataset.flip_tta = False
    c.batch_size = 96  # sec. 6.1: "batch size of 96" (per each of "16 GPU asynchronous workers")
    c.num_epochs = 300.0  # not stated in the paper: chosen here
    c.num_train_steps = -1

    # Model: Table 2's network, batch norm "after every layer", dropout 0.2 before the classifier
    # (cnnjax.models.mobilenet's default; not stated in the paper).
    c.model = ml_collections.ConfigDict()
    c.model.name = "mobilenet_v2"
    c.model.kernels = "auto"  # cnnjax.kernels.dispatch: Pallas on a GPU, oneDNN on an x86-64 CPU
    # Mixed precision, as the papers' float32 would be run on today's accelerators: bfloat16
    # activations and convolutions; float32 parameters, logits and batch-norm statistics.
    # `:fp32` trains in float32 throughout.
    c.dtype = "bfloat16"
    c.remat = False
    c.per_device_batch_norm = False

    # Optimiser (sec. 6.1): "RMSPropOptimizer with both decay and momentum set to 0.9", "weight
    # decay is set to 0.00004", "initial learning rate of 0.045, and learning rate decay rate of
    # 0.98 per epoch". RMSProp's eps is not stated: EfficientNet's 1e-3 here. Decay on the
    # convolution and dense kernels only (batch-norm parameters and biases excluded, as
    # TensorFlow's kernel regularisers do).
    c.optimizer = optimizer_config(
        "rmsprop",
        learning_rate=0.045,
        rms_decay=0.9,
        momentum=0.9,
        eps=1e-3,
        weight_decay=4e-5,
        decoupled_weight_decay=False,  # an L2 term in the loss
        decay_norm_and_bias=False,  # TF-slim's kernel regularisers: no biases, no batch norm
    )
    c.schedule = ml_collections.ConfigDict()
    c.schedule.name = "exponential"
    c.schedule.decay_rate = 0.98
    c.schedule.decay_epochs = 1.0
    c.schedule.staircase = True
    c.schedule.warmup_epochs = 0.0

    # Evaluation, logging and checkpoints.
    c.log_every_steps = 100
    c.eval_every_steps = 50_000
    c.checkpoint_every_steps = 10_000
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
        raise ValueError(f"configs/imagenet_mobilenet_v2.py takes no argument, 'smoke' or "
                         f"'fp32', got {arg!r}")
    return c
