"""U-Net (Ronneberger et al. 2015) segmenting the generated shapes set: per-pixel classes
background / disk / square / triangle on 64x64 images (cnnjax/data/shapes.py).

    python launch.py --config=configs/unet_shapes.py --workdir=runs/unet_shapes

No download and no paper number to reproduce: the set is generated, and this config shows dense
prediction end to end (per-pixel labels, loss and accuracy as the mean over each image's pixels;
`accuracy` in metrics.jsonl is pixel accuracy). The network is Fig. 1's with a quarter of the
channels (16-32-64-128-256), so it trains on a CPU; `--config.model.widths="(64,128,256,512,1024)"`
restores the paper's widths. `configs/unet_shapes.py:smoke` trains a few steps for the tests.
"""

import ml_collections
from cnnjax.train.optim import optimizer_config

VARIANTS = ("smoke",)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0

    # Data: 2,048 training and 512 test images of 64x64 with their masks; no augmentation (a crop
    # or flip would have to move the mask too) and no normalisation (pixels are in [0, 1]).
    c.dataset = ml_collections.ConfigDict()
    c.dataset.name = "shapes"
    c.dataset.data_dir = ""
    c.dataset.train_split = "train"
    c.dataset.eval_split = "test"
    c.dataset.options = ml_collections.ConfigDict({"image_size": 64})
    c.dataset.augment = "none"
    c.dataset.augment_on = "host"
    c.dataset.mix = "none"
    c.dataset.mix_alpha = 0.0
    c.batch_size = 32
    c.num_epochs = 10.0
    c.num_train_steps = -1

    # Model: U-Net, 4 halvings (inputs divisible by 16), padded convolutions (output = input size).
    c.model = ml_collections.ConfigDict()
    c.model.name = "unet"
    c.model.widths = (16, 32, 64, 128, 256)
    c.model.kernels = "auto"  # cnnjax.kernels.dispatch: Pallas on a GPU, oneDNN on an x86-64 CPU
    c.dtype = "float32"
    c.remat = False
    c.per_device_batch_norm = False

    # Optimiser: the paper used SGD with momentum 0.99 on single large tiles; with batches of 32
    # small images Adam converges without tuning (chosen here).
    c.optimizer = optimizer_config(
        "adam",
        learning_rate=1e-3,
        decoupled_weight_decay=True,
        decay_norm_and_bias=False,  # moot: no weight decay (weight_decay 0)
    )
    c.schedule = ml_collections.ConfigDict()
    c.schedule.name = "warmup_cosine"
    c.schedule.warmup_epochs = 0.5

    # Evaluation every other epoch (64 steps an epoch), logging and checkpoints.
    c.log_every_steps = 16
    c.eval_every_steps = 128
    c.checkpoint_every_steps = 128
    c.keep_checkpoints = 1

    if arg == "smoke":
        c.dataset.options = ml_collections.ConfigDict({"image_size": 32, "num_examples": 32})
        c.model.widths = (4, 8, 16, 32, 64)
        c.batch_size = 8
        c.num_epochs = 0.0
        c.num_train_steps = 4
        c.log_every_steps = c.eval_every_steps = c.checkpoint_every_steps = 4
    elif arg:
        raise ValueError(f"configs/unet_shapes.py takes no argument or 'smoke', got {arg!r}")
    return c
