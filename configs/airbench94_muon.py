"""airbench94_muon: the CIFAR-10 speed record's recipe (KellerJordan/cifar10-airbench,
airbench94_muon.py: 94.01% mean TTA accuracy over 200 runs in 2.59 s on an A100, torch 2.4.1):
airbench94's network and data trained for 8 epochs at batch 2,000 (200 steps) with Muon on the
convolution filters.

    python -m cnnjax.data.prepare cifar10 --source=../shared/data/cifar10_jpeg
    python launch.py --config=configs/airbench94_muon.py --workdir=runs/airbench94_muon

What it reaches on the CIFAR-10 JPEG q75 copy, against the PyTorch port
(experiments/airbench94/torch_airbench_muon.py) on the same CPU: experiments/airbench94/README.md.
Every value below is airbench94_muon.py's; "main()" and "Muon" name the function or class of
that file the value comes from. Differences from configs/airbench94.py: Muon instead of SGD
for the filters, batch 2,000, 8 epochs, a linear decay to 0 instead of the triangle, no
Lookahead, the whitening bias from PyTorch's default init, the head rescaled to unit standard
deviation and the logits divided by 256. On a CPU the run is float32 (the original trains in
fp16); Muon's Newton-Schulz iteration stays in bfloat16 as in the original (set
`--config.optimizer.groups.filters.ns_dtype=float32` on a CPU without bfloat16 arithmetic).
`configs/airbench94_muon.py:smoke` trains a few steps on synthetic data for the tests.
"""

import math
from pathlib import Path

import ml_collections

from cnnjax.sweep.config_file import load_module
from cnnjax.train.optim import optimizer_config

airbench94 = load_module(Path(__file__).with_name("airbench94.py"))

VARIANTS = ("smoke",)
TRAIN_EXAMPLES = 50_000
BATCH = 2000  # main(): batch_size = 2000
EPOCHS = 8  # main(): total_train_steps = ceil(8 * len(train_loader))
WHITEN_BIAS_EPOCHS = 3  # main(): whiten_bias_train_steps = ceil(3 * len(train_loader))
BIAS_LR, HEAD_LR, FILTER_LR = 0.053, 0.67, 0.24  # main(): bias_lr, head_lr; Muon(lr=0.24)
WD = 2e-6 * BATCH  # main(): wd = 2e-6 * batch_size, given to SGD as weight_decay=wd/lr


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0

    # Data: airbench94's (CifarLoader(..., aug=dict(flip=True, translate=2)): alternating flip,
    # 2-px reflected translation; infer(..., tta_level=2)).
    c.dataset = airbench94.data_config()
    c.batch_size = BATCH
    steps_per_epoch = TRAIN_EXAMPLES // BATCH  # 25: drop_last=True for training
    c.num_train_steps = math.ceil(EPOCHS * steps_per_epoch)  # 200
    c.num_epochs = float(EPOCHS)

    # Model: airbench94's network (CifarNet). whiten is a plain nn.Conv2d, so its bias keeps
    # PyTorch's default uniform init; reset() rescales the head to w / w.std(); forward()
    # returns head(x) / x.size(-1), the head's 256 inputs. Whitening from the first 5,000
    # training images' 2x2 patches, eps 5e-4 (init_whiten), kernel frozen.
    c.model = ml_collections.ConfigDict()
    c.model.name = "airbench94"
    c.model.kernels = "auto"  # cnnjax.kernels.dispatch: Pallas on a GPU, oneDNN on an x86-64 CPU
    c.model.whiten_bias = "torch"
    c.model.head_unit_std = True
    c.model.logit_scale = 1 / 256
    c.dtype = "float32"
    c.remat = False
    c.per_device_batch_norm = False
    c.whitening_init = {"param": "whiten", "num_images": 5000, "eps": 5e-4}

    # Optimiser (main()): SGD, Nesterov momentum 0.85, coupled decay wd/lr per group, on the
    # batch-norm biases (lr 0.053; the top-level rule here), the whitening bias (0.053, linear
    # to 0 over its 3 epochs, then frozen: forward(whiten_bias_grad=step < 75)) and the head
    # (0.67); Muon (lr 0.24, momentum 0.6, Nesterov; cnnjax/train/muon.py) on the 3x3 filters.
    # Every rate but the whitening bias's decays linearly to 0 over the 200 steps
    # (initial_lr * (1 - step / total_train_steps)). Summed loss, label smoothing 0.2
    # (F.cross_entropy(..., label_smoothing=0.2, reduction="sum")). No Lookahead.
    c.optimizer = optimizer_config(
        "sgd",
        learning_rate=BIAS_LR,
        momentum=0.85,
        nesterov=True,
        weight_decay=WD / BIAS_LR,
        decay_norm_and_bias=True,  # PyTorch's weight_decay acts on every tensor of a group
        label_smoothing=0.2,
        loss_reduction="sum",
        freeze=[(r"^whiten/kernel$", 0.0), (r"^whiten/bias$", float(WHITEN_BIAS_EPOCHS))],
        groups={
            "whiten_bias": {"pattern": r"^whiten/bias$",
                            "schedule": {"knots_epochs": [0.0, float(WHITEN_BIAS_EPOCHS)]}},
            "head": {"pattern": r"^head/kernel$", "learning_rate": HEAD_LR,
                     "weight_decay": WD / HEAD_LR},
            "filters": {"pattern": r"/conv\d/kernel$", "name": "muon",
                        "learning_rate": FILTER_LR, "momentum": 0.6, "nesterov": True,
                        "weight_decay": 0.0, "ns_steps": 3, "ns_dtype": "bfloat16",
                        "renormalize": True},
        },
    )
    c.schedule = ml_collections.ConfigDict()
    c.schedule.name = "piecewise_linear"
    c.schedule.knots_epochs = [0.0, float(EPOCHS)]
    c.schedule.scales = [1.0, 0.0]

    # Evaluation at the end only (the original's per-epoch val_acc is a progress print).
    c.log_every_steps = 5
    c.eval_every_steps = c.num_train_steps
    c.checkpoint_every_steps = steps_per_epoch
    c.keep_checkpoints = 1

    if arg == "smoke":
        airbench94.smoke_data(c.dataset)
        c.batch_size = 16
        c.num_train_steps = 8  # 2 epochs: the whitening bias freezes and the flip alternates
        c.num_epochs = 2.0
        c.schedule.knots_epochs = [0.0, 2.0]
        c.optimizer.freeze = [(r"^whiten/kernel$", 0.0), (r"^whiten/bias$", 1.0)]
        c.optimizer.groups.whiten_bias.schedule.knots_epochs = [0.0, 1.0]
        c.whitening_init = {"param": "whiten", "num_images": 32, "eps": 5e-4}
        c.log_every_steps = c.eval_every_steps = c.checkpoint_every_steps = 4
    elif arg:
        raise ValueError(f"configs/airbench94_muon.py takes no argument or 'smoke', got {arg!r}")
    return c
