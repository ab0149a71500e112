"""TextCNN (Kim 2014) on the generated keyword task: token ids padded to 64, four classes, each
marked by its own keywords at random positions among random filler words (cnnjax/data/text.py).

    python launch.py --config=configs/textcnn_keywords.py --workdir=runs/textcnn_keywords

No corpus is needed and there is no paper number to reproduce: the config shows the text path
end to end (int32 token ids in, 1-D convolutions of widths 3/4/5 with 100 maps each,
max-over-time pooling, dropout 0.5) with Kim's sec. 3.1 mini-batch of 50. Departures: Adam
instead of the paper's Adadelta (chosen here), and no l2 max-norm constraint on the classifier
(cnnjax's optimisers do not implement it).
`configs/textcnn_keywords.py:smoke` trains a few steps for the tests.
"""

import ml_collections
from cnnjax.train.optim import optimizer_config

VARIANTS = ("smoke",)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0

    # Data: 4,096 training and 1,024 test sentences of 8-64 tokens from a 2,000-word vocabulary.
    c.dataset = ml_collections.ConfigDict()
    c.dataset.name = "keywords"
    c.dataset.data_dir = ""
    c.dataset.train_split = "train"
    c.dataset.eval_split = "test"
    c.dataset.options = ml_collections.ConfigDict(
        {"vocab_size": 2000, "num_classes": 4, "max_len": 64})
    c.dataset.augment = "none"
    c.dataset.augment_on = "host"
    c.dataset.mix = "none"
    c.dataset.mix_alpha = 0.0
    c.batch_size = 50  # Kim sec. 3.1: "mini-batch size of 50"
    c.num_epochs = 5.0
    c.num_train_steps = -1

    # Model: Kim's CNN-rand (embeddings learned from scratch), k = 300, filters 3/4/5 x 100,
    # dropout 0.5 (sec. 3.1), with this task's vocabulary.
    c.model = ml_collections.ConfigDict()
    c.model.name = "textcnn"
    c.model.vocab_size = 2000
    c.model.kernels = "auto"  # cnnjax.kernels.dispatch: Pallas on a GPU, oneDNN on an x86-64 CPU
    c.dtype = "float32"
    c.remat = False
    c.per_device_batch_norm = False

    c.optimizer = optimizer_config(
        "adam",
        learning_rate=1e-3,
        decoupled_weight_decay=True,
        decay_norm_and_bias=False,  # moot: no weight decay (weight_decay 0)
    )
    c.schedule = ml_collections.ConfigDict()
    c.schedule.name = "constant"

    # Evaluation every epoch (81 steps), logging and checkpoints.
    c.log_every_steps = 27
    c.eval_every_steps = 81
    c.checkpoint_every_steps = 81
    c.keep_checkpoints = 1

    if arg == "smoke":
        c.dataset.options = ml_collections.ConfigDict(
            {"vocab_size": 100, "num_classes": 4, "max_len": 16, "num_examples": 40})
        c.model.vocab_size = 100
        c.batch_size = 10
        c.num_epochs = 0.0
        c.num_train_steps = 4
        c.log_every_steps = c.eval_every_steps = c.checkpoint_every_steps = 4
    elif arg:
        raise ValueError(f"configs/textcnn_keywords.py takes no argument or 'smoke', got {arg!r}")
    return c
