"""The fast route to 94% CIFAR-10 test accuracy on one GPU: ResNet-9 with the recipe of Page 2018
("How to train your ResNet", the DAWNBench 94% entry, 24 epochs).

    python launch.py --config=configs/fast_cifar10.py --workdir=runs/fast_cifar10

Published: 94% test accuracy in 24 epochs (79 s on a V100 in Page's final post). Time to 94%
from launch over several seeds, one command (experiments/fast_cifar10, measured only on a GPU):
    python experiments/time_to_accuracy.py --config=configs/fast_cifar10.py --target=0.94 \
        --seeds=0,1,2,3,4 --root=runs/fast_cifar10 --record=experiments/fast_cifar10/results.md
Needs CIFAR-10 prepared (`python -m cnnjax.data.prepare cifar10 --source=...`);
results on the JPEG copy in ../shared/data are labelled "CIFAR-10 (JPEG q75 copy)".
Evaluation averages each test image with its mirror image (flip test-time augmentation, as the
later record holders do; Page's 94% was without it, so it is a small head start).
`configs/fast_cifar10.py:smoke` trains a few steps on synthetic data for the tests.
"""

import ml_collections
from cnnjax.train.optim import optimizer_config

VARIANTS = ("smoke",)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0

    # Data: pad 4 + random crop + flip, on the device; per-channel normalisation.
    c.dataset = ml_collections.ConfigDict()
    c.dataset.name = "cifar10"
    c.dataset.data_dir = ""
    c.dataset.train_split = "train"
    c.dataset.eval_split = "test"
    c.dataset.augment = "pad_crop_flip"
    c.dataset.augment_pad = 4
    c.dataset.augment_on = "device"
    c.dataset.mix = "none"
    c.dataset.mix_alpha = 0.0
    c.dataset.mean = (0.4914, 0.4822, 0.4465)
    c.dataset.std = (0.2470, 0.2435, 0.2616)
    c.dataset.flip_tta = True
    c.batch_size = 512
    c.num_epochs = 24.0
    c.num_train_steps = -1

    # Model: ResNet-9 (cnnjax/models/resnet9.py), bf16 compute on the GPU.
    c.model = ml_collections.ConfigDict()
    c.model.name = "resnet9"
    c.model.kernels = "auto"  # cnnjax.kernels.dispatch: Pallas on a GPU, oneDNN on an x86-64 CPU
    c.dtype = "bfloat16"
    c.remat = False
    c.per_device_batch_norm = False

    # Optimiser: Nesterov SGD 0.9, weight decay 5e-4 x batch 512 on the summed loss = 5e-4 on the
    # mean loss with the rate scaled by 512; peak rate 0.4 at epoch 5, linearly to 0 at epoch 24;
    # label smoothing 0.2 (Page's final post).
    c.optimizer = optimizer_config(
        "sgd",
        learning_rate=0.4,
        momentum=0.9,
        nesterov=True,
        weight_decay=5e-4,
        label_smoothing=0.2,
        # Page's code hands every trainable parameter, batch-norm scales and offsets included,
        # to one torch SGD with weight_decay=5e-4*batch_size (ResNet-9's convolutions have no
        # biases).
        decay_norm_and_bias=True,
    )
    c.schedule = ml_collections.ConfigDict()
    c.schedule.name = "piecewise_linear"
    c.schedule.knots_epochs = [0.0, 5.0, 24.0]
    c.schedule.scales = [0.0, 1.0, 0.0]

    # Evaluation every epoch, so experiments/time_to_accuracy.py sees 94% within an epoch of it.
    c.log_every_steps = 20
    c.eval_every_steps = 97  # 50,000 // 512 steps per epoch
    c.checkpoint_every_steps = 485
    c.keep_checkpoints = 1

    if arg == "smoke":
        c.dataset.name = "synthetic"
        c.dataset.options = ml_collections.ConfigDict(
            {"image_shape": (32, 32, 3), "num_classes": 10, "num_examples": 64})
        c.dtype = "float32"
        c.batch_size = 16
        c.num_epochs = 1.0
        c.log_every_steps = c.eval_every_steps = c.checkpoint_every_steps = 2
    elif arg:
        raise ValueError(f"configs/fast_cifar10.py takes no argument or 'smoke', got {arg!r}")
    return c
