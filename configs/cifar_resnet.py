"""He et al. 2016 (Deep residual learning), CIFAR-10, sec. 4.2 and Table 6: ResNet-20/32/44/56/110
and their plain counterparts (Fig. 6).

    python launch.py --config=configs/cifar_resnet.py:depth=56 --workdir=runs/resnet56
    python launch.py --config=configs/cifar_resnet.py:depth=56,plain --workdir=runs/plain56

Published test error (Table 6, 45k/5k split for choosing the schedule, trained on 45k): ResNet-20
8.75%, -32 7.51%, -44 7.17%, -56 6.97%, -110 6.43% (best of 5 runs; mean 6.61 +- 0.16). Plain
nets: the deeper plain net has the higher training error (Fig. 6, left). Needs CIFAR-10 prepared
with `python -m cnnjax.data.prepare cifar10 --source=...`. Measured results:
experiments/resnet_cifar and experiments/plain_vs_resnet_cifar.
`configs/cifar_resnet.py:smoke` runs a few steps on synthetic 32x32 images for the tests.
"""

import ml_collections

from cnnjax.sweep import product
from cnnjax.train.optim import optimizer_config

DEPTHS = (20, 32, 44, 56, 110)
VARIANTS = ("smoke", "depth=20", "depth=110", "depth=56,plain")


def _parse(arg: str | None) -> dict:
    """"depth=56,plain" -> {"depth": 56, "plain": True}; "smoke" -> {"smoke": True}."""
    out = {"depth": 20, "plain": False, "smoke": False}
    for part in filter(None, (arg or "").split(",")):
        key, _, value = part.partition("=")
        if key == "depth" and value.isdigit() and int(value) in DEPTHS:
            out["depth"] = int(value)
        elif key in ("plain", "smoke") and not value:
            out[key] = True
        else:
            raise ValueError(f"configs/cifar_resnet.py: bad argument {part!r}; expected "
                             f"depth=N (N in {DEPTHS}), plain, smoke, comma-separated")
    return out


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    a = _parse(arg)
    c = ml_collections.ConfigDict()
    c.seed = 0

    # Data: "45k/5k train/val split" (sec. 4.2); the test set is reported. Augmentation: "4
    # pixels are padded on each side, and a 32x32 crop is randomly sampled from the padded image
    # or its horizontal flip"; per-pixel mean subtracted (here per-channel mean/std).
    c.dataset = ml_collections.ConfigDict()
    c.dataset.name = "cifar10"
    c.dataset.data_dir = ""  # "" = $TFDS_DATA_DIR or ~/tensorflow_datasets
    c.dataset.train_split = "train"
    c.dataset.eval_split = "test"
    c.dataset.augment = "pad_crop_flip"
    c.dataset.augment_pad = 4
    c.dataset.augment_on = "device"  # crop/flip inside the jitted step: no host bottleneck
    c.dataset.mix = "none"
    c.dataset.mix_alpha = 0.0
    c.batch_size = 128  # "mini-batch size of 128" on two GPUs
    c.num_epochs = 0.0
    c.num_train_steps = 64_000  # "terminate training at 64k iterations"

    # Model: option A shortcuts (zero-padded identity), 3 stages of n blocks, 16-32-64 filters.
    c.model = ml_collections.ConfigDict()
    c.model.name = f"cifar_{'plain' if a['plain'] else 'resnet'}{a['depth']}"
    c.model.kernels = "auto"  # cnnjax.kernels.dispatch: Pallas on a GPU, oneDNN on an x86-64 CPU
    c.dtype = "float32"
    c.remat = False
    c.per_device_batch_norm = False

    # Optimiser: SGD, momentum 0.9, weight decay 1e-4, lr 0.1 divided by 10 at 32k and 48k.
    c.optimizer = optimizer_config(
        "sgd",
        learning_rate=0.1,
        momentum=0.9,
        nesterov=False,
        weight_decay=1e-4,
        decoupled_weight_decay=False,  # L2 in the loss, as in Caffe/Torch
        # Sec. 4.2 names no exemption from "a weight decay of 0.0001"; Torch's optim.sgd, which the
        # reproductions (fb.resnet.torch, Gross & Wilber 2016) use, decays every parameter,
        # batch-norm scales and offsets included.
        decay_norm_and_bias=True,
    )
    c.schedule = ml_collections.ConfigDict()
    c.schedule.name = "piecewise"
    c.schedule.boundaries_steps = [32_000, 48_000]
    c.schedule.scales = [0.1, 0.1]
    # ResNet-110: "we use 0.01 to warm up the training until the training error is below 80%
    # (about 400 iterations), and then go back to 0.1": a fixed 400-step constant warm-up here.
    c.schedule.warmup_epochs = 0.0
    c.schedule.constant_warmup_steps = 400 if a["depth"] == 110 else 0
    c.schedule.constant_warmup_scale = 0.1

    # Evaluation, logging and checkpoints.
    c.log_every_steps = 100
    c.eval_every_steps = 2_000
    c.checkpoint_every_steps = 2_000
    c.keep_checkpoints = 2

    if a["smoke"]:
        c.dataset.name = "synthetic"
        c.dataset.options = ml_collections.ConfigDict({"image_shape": (32, 32, 3),
                                                       "num_classes": 10, "num_examples": 256})
        c.batch_size = 32
        c.num_train_steps = 6
        c.schedule.boundaries_steps = [3, 5]
        c.log_every_steps = c.eval_every_steps = c.checkpoint_every_steps = 3
    return c


def get_sweep(arg: str | None = None) -> list[dict]:
    """Table 6 and Fig. 6: every depth, residual and plain, 5 seeds (the paper's "5 runs" for 110)."""
    del arg
    return product(**{"model.name": [f"cifar_{kind}{d}" for kind in ("resnet", "plain")
                                     for d in DEPTHS], "seed": list(range(5))})
