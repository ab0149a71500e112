"""Tan & Le 2019 (EfficientNet: rethinking model scaling for convolutional neural networks):
EfficientNet-B0 on ILSVRC-2012 at 224x224, sec. 5.2.

    python -m cnnjax.data.prepare imagenet2012 --source=DIR_WITH_THE_TARS
    python launch.py --config=configs/imagenet_efficientnet_b0.py --workdir=runs/imagenet_effnet_b0
    python launch.py --config=configs/imagenet_efficientnet_b0.py:fp32 --workdir=runs/efficientnet_b0_fp32

Published, not measured here: 77.1% top-1 / 93.3% top-5 accuracy (Table 2), trained with
AutoAugment, which cnnjax does not implement.
`configs/imagenet_efficientnet_b0.py:smoke` trains 2 steps on synthetic 32x32 images for the tests.
"""

import ml_collections

from cnnjax.data.augment import IMAGENET_MEAN, IMAGENET_STD
from cnnjax.train.optim import optimizer_config

VARIANTS = ("smoke", "fp32")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0

    # Data: the Inception crop + flip (MnasNet's "Inception preprocessing", whose settings sec.
    # 5.2 reuses); sec. 5.2's AutoAugment is not implemented. Evaluation: the central 224 crop of
    # the image resized to 256.
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
    # Not stated in the EfficientNet paper; MnasNet (Tan et al. 2019, sec. 5), whose settings it
    # follows, used "batch size 4K" with the same 0.256 learning rate.
    c.batch_size = 4096
    c.num_epochs = 350.0  # not stated in the paper: chosen here
    c.num_train_steps = -1

    # Model: B0 (Table 1), SiLU, stochastic depth "with survival probability 0.8" (drop rate 0.2),
    # "dropout ratio from 0.2 for EfficientNet-B0", "batch norm momentum 0.99".
    c.model = ml_collections.ConfigDict()
    c.model.name = "efficientnet_b0"
    c.model.kernels = "auto"  # cnnjax.kernels.dispatch: Pallas on a GPU, oneDNN on an x86-64 CPU
    c.model.dropout_rate = 0.2
    c.model.drop_path_rate = 0.2
    c.model.bn_momentum = 0.99
    # Mixed precision, as the papers' float32 would be run on today's accelerators: bfloat16
    # activations and convolutions; float32 parameters, logits and batch-norm statistics.
    # `:fp32` trains in float32 throughout.
    c.dtype = "bfloat16"
    c.remat = False
    c.per_device_batch_norm = False

    # Optimiser (sec. 5.2): "RMSProp optimizer with decay 0.9 and momentum 0.9", "weight decay
    # 1e-5", "initial learning rate 0.256 that decays by 0.97 every 2.4 epochs" (eps 1e-3,
    # TensorFlow 1's RMSProp, see cnnjax.train.optim). MnasNet's 5-epoch linear warm-up. Decay on
    # the convolution and dense kernels only. No weight averaging or label smoothing: neither is
    # in the paper.
    c.optimizer = optimizer_config(
        "rmsprop",
        learning_rate=0.256,
        rms_decay=0.9,
        momentum=0.9,
        eps=1e-3,
        weight_decay=1e-5,
        decoupled_weight_decay=False,  # an L2 term in the loss
        # The TPU reference code exempts batch-norm variables only; here the squeeze-excite
        # and classifier biases are exempt too (every 1-D parameter).
        decay_norm_and_bias=False,
    )
    c.schedule = ml_collections.ConfigDict()
    c.schedule.name = "exponential"
    c.schedule.decay_rate = 0.97
    c.schedule.decay_epochs = 2.4
    c.schedule.staircase = True
    c.schedule.warmup_epochs = 5.0

    # Evaluation, logging and checkpoints.
    c.log_every_steps = 100
    c.eval_every_steps = 5_000
    c.checkpoint_every_steps = 2_000
    c.keep_checkpoints = 2

    if arg == "smoke":
        c.dataset.name = "synthetic"
        c.dataset.options = ml_collections.ConfigDict(
            {"image_shape": (32, 32, 3), "num_classes": 1000, "num_examples": 8})
        c.batch_size = 4
        c.num_epochs = 0.0
        c.num_train_steps = 2
        c.schedule.warmup_epochs = 0.0
        c.log_every_steps = c.eval_every_steps = c.checkpoint_every_steps = 2
    elif arg == "fp32":
        c.dtype = "float32"
    elif arg:
        raise ValueError(f"configs/imagenet_efficientnet_b0.py takes no argument, 'smoke' or "
                         f"'fp32', got {arg!r}")
    return c
