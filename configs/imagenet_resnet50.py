"""He et al. 2016 (Deep residual learning for image recognition), ImageNet: ResNet-50, sec. 3.4.

    python -m cnnjax.data.prepare imagenet2012 --source=DIR_WITH_THE_TARS
    python launch.py --config=configs/imagenet_resnet50.py --workdir=runs/imagenet_resnet50
    python launch.py --config=configs/imagenet_resnet50.py:fp32 --workdir=runs/resnet50_fp32

Published, not measured here: 22.85% top-1 / 6.71% top-5 error on the validation set with
10-crop testing (Table 3); 20.74% / 5.25% with multi-scale fully-convolutional testing (Table 4).
`configs/imagenet_resnet50.py:smoke` trains 2 steps on synthetic 32x32 images for the tests.
"""

import ml_collections

from cnnjax.data.augment import IMAGENET_MEAN, IMAGENET_STD
from cnnjax.train.optim import optimizer_config

VARIANTS = ("smoke", "fp32")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0

    # Data (sec. 3.4): "resized with its shorter side randomly sampled in [256, 480] for scale
    # augmentation. A 224x224 crop is randomly sampled from an image or its horizontal flip, with
    # the per-pixel mean subtracted [21]. The standard color augmentation in [21] is used" (the
    # PCA lighting noise). Per-channel mean/std here instead of the per-pixel mean. Testing:
    # "the standard 10-crop testing" (Table 3), of the image resized to 256.
    c.dataset = ml_collections.ConfigDict()
    c.dataset.name = "imagenet2012"
    c.dataset.data_dir = ""  # "" = $TFDS_DATA_DIR or ~/tensorflow_datasets
    c.dataset.train_split = "train"
    c.dataset.eval_split = "validation"
    c.dataset.options = ml_collections.ConfigDict({
        "image_size": 224, "train_crop": "scale_jitter", "scale_range": (256, 480),
        "eval_crop": "ten_crop"})
    c.dataset.augment = "lighting"  # AlexNet's PCA colour noise, std 0.1
    c.dataset.augment_on = "device"  # in the train step, on the uint8 views' floats
    c.dataset.mix = "none"
    c.dataset.mix_alpha = 0.0
    c.dataset.pad_to = 0
    c.dataset.mean = IMAGENET_MEAN
    c.dataset.std = IMAGENET_STD
    c.dataset.flip_tta = False
    c.batch_size = 256  # "We use SGD with a mini-batch size of 256"
    # "trained for up to 60 x 10^4 iterations": 600,000 x 256 / 1,281,167 = 120 epochs.
    c.num_epochs = 120.0
    c.num_train_steps = -1

    # Model: Table 1's 50-layer bottleneck network, batch norm after every convolution, no
    # dropout ("we do not use dropout"). Statistics per device as in the multi-GPU original.
    c.model = ml_collections.ConfigDict()
    c.model.name = "resnet50"
    c.model.kernels = "auto"  # cnnjax.kernels.dispatch: Pallas on a GPU, oneDNN on an x86-64 CPU
    # Mixed precision, as the papers' float32 would be run on today's accelerators: bfloat16
    # activations and convolutions; float32 parameters, logits and batch-norm statistics.
    # `:fp32` trains in float32 throughout.
    c.dtype = "bfloat16"
    c.remat = False
    c.per_device_batch_norm = True

    # Optimiser: "weight decay of 0.0001 and a momentum of 0.9"; "the learning rate starts from
    # 0.1 and is divided by 10 when the error plateaus": at epochs 30, 60 and 90 here (the
    # plateaus of fb.resnet.torch's curves, Gross & Wilber 2016), a fixed reading of it.
    c.optimizer = optimizer_config(
        "sgd",
        learning_rate=0.1,
        momentum=0.9,
        nesterov=False,
        weight_decay=1e-4,
        decoupled_weight_decay=False,  # L2 in the gradient, as Caffe/Torch
        # The paper names no exemption; fb.resnet.torch (Gross & Wilber 2016), whose curves
        # set the schedule here, decays every parameter, batch-norm ones included.
        decay_norm_and_bias=True,
    )
    c.schedule = ml_collections.ConfigDict()
    c.schedule.name = "piecewise"
    c.schedule.boundaries_epochs = [30, 60, 90]
    c.schedule.scales = [0.1, 0.1, 0.1]
    c.schedule.warmup_epochs = 0.0

    # Evaluation (one 10-crop pass over the 50,000 validation images), logging, checkpoints.
    c.log_every_steps = 100
    c.eval_every_steps = 25_000
    c.checkpoint_every_steps = 5_000
    c.keep_checkpoints = 2

    if arg == "smoke":
        c.dataset.name = "synthetic"
        c.dataset.options = ml_collections.ConfigDict(
            {"image_shape": (32, 32, 3), "num_classes": 1000, "num_examples": 8})
        c.per_device_batch_norm = False
        c.batch_size = 4
        c.num_epochs = 0.0
        c.num_train_steps = 2
        c.schedule.boundaries_epochs = [0.5, 1.0, 1.5]
        c.log_every_steps = c.eval_every_steps = c.checkpoint_every_steps = 2
    elif arg == "fp32":
        c.dtype = "float32"
    elif arg:
        raise ValueError(f"configs/imagenet_resnet50.py takes no argument, 'smoke' or "
                         f"'fp32', got {arg!r}")
    return c
