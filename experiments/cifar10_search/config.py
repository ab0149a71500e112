"""A small CNN on CIFAR-10 (JPEG q75 copy) for a hyperparameter search on 2 CPU cores.

    python launch.py --config=experiments/cifar10_search/config.py --workdir=runs/cifar_small \
        --config.dataset.data_dir=DATA          # one run at the defaults
    python launch.py --config=experiments/cifar10_search/config.py --search \
        --workdir=searches/cifar10 --config.dataset.data_dir=DATA --parallel=1

simple_cnn with widths (16, 32) and a 64-unit hidden layer (about 0.14 M parameters), batch 128,
one epoch (390 steps) with the evaluation on the 10,000 test images every 130 steps; Nesterov
SGD with cosine decay, per-channel normalisation, pad-crop-flip on the device. The search: TPE
over learning rate, weight decay and label smoothing, 12 trials of which the first is the
defaults, successive halving at the evaluations (rungs at 130 and 390 steps).
"""

import ml_collections

from cnnjax.train.optim import optimizer_config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    if arg:
        raise ValueError(f"experiments/cifar10_search/config.py takes no argument, got {arg!r}")
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.dataset = ml_collections.ConfigDict()
    c.dataset.name = "cifar10"
    c.dataset.data_dir = ""  # where `python -m cnnjax.data.prepare cifar10` wrote it
    c.dataset.augment = "pad_crop_flip"
    c.dataset.augment_pad = 4
    c.dataset.augment_on = "device"
    c.dataset.mean = (0.4914, 0.4822, 0.4465)
    c.dataset.std = (0.2470, 0.2435, 0.2616)
    c.batch_size = 128
    c.num_epochs = 1.0
    c.num_train_steps = -1

    c.model = ml_collections.ConfigDict()
    c.model.name = "simple_cnn"
    c.model.widths = (16, 32)
    c.model.hidden = 64
    c.model.dropout_rate = 0.0
    c.model.kernels = "auto"
    c.dtype = "float32"
    c.remat = False
    c.per_device_batch_norm = False

    c.optimizer = optimizer_config("sgd", learning_rate=0.05, momentum=0.9, nesterov=True,
                                   weight_decay=5e-4, label_smoothing=0.0,
                                   decay_norm_and_bias=False)
    c.schedule = ml_collections.ConfigDict()
    c.schedule.name = "warmup_cosine"
    c.schedule.warmup_epochs = 0.1

    c.log_every_steps = 65
    c.eval_every_steps = 130
    c.checkpoint_every_steps = 130
    c.keep_checkpoints = 1
    return c


def get_search(arg: str | None = None):
    from cnnjax.sweep.search_space import Search, log_uniform, uniform

    defaults = get_config(arg).optimizer
    return Search(
        space={"optimizer.learning_rate": log_uniform(3e-3, 3.0),
               "optimizer.weight_decay": log_uniform(1e-5, 1e-2),
               "optimizer.label_smoothing": uniform(0.0, 0.3)},
        objective="accuracy", direction="maximize", sampler="tpe",
        sampler_kwargs={"n_startup_trials": 5}, num_trials=12, pruner="successive_halving",
        pruner_kwargs={"min_resource": 130, "reduction_factor": 3},
        first_trials=[{"optimizer.learning_rate": defaults.learning_rate,
                       "optimizer.weight_decay": defaults.weight_decay,
                       "optimizer.label_smoothing": defaults.label_smoothing}])
