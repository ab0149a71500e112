"""The analysis CLI: pictures (PNG) and tables (Markdown) of a trained run or of any model.

    python -m cnnjax.analysis.visualize --workdir=runs/default --what=filters,saliency --out=DIR
    python -m cnnjax.analysis.visualize --workdir=runs/a --workdir=runs/b --what=curves --out=DIR
    python -m cnnjax.analysis.visualize --model=vgg16 --what=summary,receptive_field --out=DIR

--what takes a comma-separated list of (file written under --out):
  filters          first-layer filters as a grid (filters.png)
  feature_maps     maps of --layer (default: the first conv) for test image --index
                   (feature_maps.png)
  activation_max   inputs maximising --units of --layer (default: class logits 0-9)
                   (activation_max.png)
  saliency         input-gradient maps of --num test images (saliency.png)
  occlusion        occlusion sensitivity, --patch / --patch_stride (occlusion.png)
  neighbours       nearest training images in penultimate feature space (neighbours.png)
  adversarial      FGSM and PGD accuracy against --epsilons, and a PGD panel at --eps beside
                   the perturbation itself, amplified to fill the colour scale; budgets are in
                   pixel units, of [0, 1] or with --eps_scale=255 of [0, 255] (e.g.
                   --epsilons=0,2,4,8 --eps_scale=255), whatever normalisation the run applies
                   (accuracy_vs_eps.png, adversarial.png, adversarial.md)
  equivariance     change of --layer's maps and pooled maps under shifts (equivariance.png)
  curves           train and test error of every --workdir's metrics.jsonl (curves.png)
  summary          per-layer parameters, activations and MACs (summary.md)
  receptive_field  per-layer receptive fields (receptive_field.md)

The examples analysed are a random sample (--seed) of the test split (--max_examples of them)
and of the training split (--bank, the neighbours' bank), never the first records, which a
split stored class by class would fill with one class; the panels show one image per class
before repeating a class, and classes by their names. Each run says which sample it used.

A run is restored from WORKDIR/config.json and its newest readable checkpoint with the training code
(`cnnjax.train.trainer.build_model_and_optimizer`, `cnnjax.train.trainer.initial_state`,
`cnnjax.train.checkpoint.Checkpointer`); EMA parameters are used when the run kept them, as its
evaluation does. summary and receptive_field also work on --model NAME [--input_shape H,W,C]
without a run. Layer names are those of the summary table.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import sys
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import app, flags, logging

from cnnjax import data, kernels, models
from cnnjax.analysis import (activation_max, adversarial, attribution, equivariance, features,
                             graph, plots, receptive_field, summary)
from cnnjax.analysis.sampling import label_text, panel_order, sample_rows
from cnnjax.data.augment import to_unit_range
from cnnjax.data.device_pipeline import from_config
from cnnjax.train.checkpoint import Checkpointer
from cnnjax.train.metrics import read_jsonl
from cnnjax.train.trainer import build_model_and_optimizer, initial_state

WHATS = ("filters", "feature_maps", "activation_max", "saliency", "occlusion", "neighbours",
         "adversarial", "equivariance", "curves", "summary", "receptive_field")

_WORKDIR = flags.DEFINE_multi_string("workdir", [], "Run directory (repeat for --what=curves).")
_MODEL = flags.DEFINE_string("model", None, "A registered model, for summary/receptive_field "
                             "without a run.")
_INPUT_SHAPE = flags.DEFINE_list("input_shape", None, "H,W,C for --model (default: the "
                                 "model's registered input shape).")
_WHAT = flags.DEFINE_list("what", None, f"Comma-separated, of: {', '.join(WHATS)}.")
_OUT = flags.DEFINE_string("out", None, "Output directory.")
_LAYER = flags.DEFINE_string("layer", None, "Layer name (default per --what; see summary.md).")
_UNITS = flags.DEFINE_list("units", None, "activation_max: units (default 0..9).")
_INDEX = flags.DEFINE_integer("index", 0, "feature_maps: which test image of the sample.")
_NUM = flags.DEFINE_integer("num", 4, "Test images shown by saliency/occlusion/neighbours/"
                            "adversarial.")
_STEPS = flags.DEFINE_integer("steps", 200, "activation_max: gradient-ascent steps.")
_PATCH = flags.DEFINE_integer("patch", 0, "occlusion: square side (0: a quarter of the image).")
_PATCH_STRIDE = flags.DEFINE_integer("patch_stride", 0, "occlusion: stride (0: patch // 2, >= 1).")
_EPSILONS = flags.DEFINE_list("epsilons", ["0", "0.02", "0.05", "0.1", "0.2", "0.3"],
                              "adversarial: L-infinity budgets.")
_EPS = flags.DEFINE_float("eps", 0.1, "adversarial: budget of the example panel.")
_EPS_SCALE = flags.DEFINE_enum("eps_scale", "1", ["1", "255"], "adversarial: --epsilons and "
                               "--eps are pixel units of [0, 1] ('1') or of [0, 255] ('255').")
_MAX_EXAMPLES = flags.DEFINE_integer("max_examples", 1000, "Test images sampled (accuracy and "
                                     "equivariance statistics, the panels' images).")
_BANK = flags.DEFINE_integer("bank", 10000, "Training images sampled (the neighbours' bank).")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the random samples of both splits.")

flags.mark_flags_as_required(["what", "out"])


@dataclasses.dataclass
class Run:
    """A restored run: its config, model, variables and random samples of both splits as
    arrays (images (N, H, W, C) float32, labels (N,) int32), in the sample's order."""

    name: str
    config: ml_collections.ConfigDict
    model: object
    variables: dict
    train: tuple[np.ndarray, np.ndarray]
    test: tuple[np.ndarray, np.ndarray]
    test_pixels: np.ndarray  # the test images as stored, in [0, 1], before any preprocessing
    test_rows: np.ndarray  # the sample's positions in the test split (sampling.sample_rows)
    sizes: tuple[int, int]  # examples in the (train, test) splits the samples were drawn from
    seed: int
    class_names: tuple[str, ...] = ()

    def label(self, label: int) -> str:
        return label_text(label, self.class_names)

    def sample_note(self) -> str:
        """Which examples were analysed, for the outputs."""
        return (f"{len(self.test[1])} of the {self.sizes[1]} test images and {len(self.train[1])} "
                f"of the {self.sizes[0]} training images, random samples (--seed={self.seed})")

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.test[0].shape[1:])

    @property
    def value_range(self) -> tuple[float, float]:
        """The pixel range of the test images: attacks and activation maximisation stay in it."""
        return float(self.test[0].min()), float(self.test[0].max())

    def logits_fn(self) -> Callable[[jax.Array], jax.Array]:
        return lambda x: self.model.apply(self.variables, x, train=False)

    def pixel_logits_fn(self) -> Callable[[jax.Array], jax.Array]:
        """Stored pixels (N, H, W, C) in [0, 1] -> logits, through the run's evaluation
        preprocessing: gradients, and so attack budgets, are in pixel units."""
        pipeline = _eval_pipeline(self.config)
        return lambda x: self.model.apply(self.variables, pipeline.eval(x), train=False)


def split_arrays(config: ml_collections.ConfigDict, split: str, limit: int | None = None,
                 seed: int = 0):
    """(source, images, labels, rows) of a random sample of `limit` (default all) examples of one
    split of the run's dataset, without augmentation: rows = sampling.sample_rows(split size,
    limit, seed), the images and labels in that order."""
    ds = config.dataset
    source = data.create(ds.name, split, batch_size=config.batch_size, train=False,
                         seed=config.seed, data_dir=ds.get("data_dir") or None,
                         **dict(ds.get("options", {})))
    rows = sample_rows(source.num_examples, limit, seed)
    chunks = [source.examples(rows[i:i + config.batch_size])
              for i in range(0, len(rows), config.batch_size)]
    images = np.concatenate([c["image"] for c in chunks])
    labels = np.concatenate([c["label"] for c in chunks])
    # Prepared datasets hand out uint8 pixels (the device scales them in training): [0, 1] here.
    return source, to_unit_range(images).astype(np.float32), labels, rows


def load_run(workdir: str | pathlib.Path, max_train: int | None = None,
             max_test: int | None = None, preprocess: bool = True, seed: int = 0) -> Run:
    """Restores the newest readable checkpoint of `workdir` (a launch.py run) with random samples
    (`seed`) of `max_train` / `max_test` examples of its splits (default all, in a random order);
    ValueError if there is none.

    With `preprocess` the images are what the model saw in evaluation: padded (dataset.pad_to)
    and normalised (dataset.mean/std) by the run's device pipeline, one view each; without it
    they are the stored pixels in [0, 1] (apply `eval_preprocess(run.config, images)` before
    the model)."""
    workdir = pathlib.Path(workdir)
    path = workdir / "config.json"
    if not path.is_file():
        raise ValueError(f"{str(path)!r} not found: --workdir must be a launch.py run directory")
    config = ml_collections.ConfigDict(json.loads(path.read_text()))
    ds = config.dataset
    source, train_x, train_y, _ = split_arrays(config, ds.get("train_split", "train"), max_train,
                                               seed)
    test_source, test_x, test_y, test_rows = split_arrays(config, ds.get("eval_split", "test"),
                                                          max_test, seed)
    # Only the optimiser state's structure matters here, not the schedule's length.
    steps_per_epoch = max(1, len(train_y) // config.batch_size)
    model, _, tx, _ = build_model_and_optimizer(config, source.num_classes, steps_per_epoch)
    if isinstance(model, kernels.KernelScoped):
        # The bare model (same parameters, same function) computes under the process's kernels
        # setting; graph.trace forces XLA's lowering, whose jaxpr shows the real convolution
        # and pooling ops that the kernels' custom calls would hide.
        model = model.model
    use_ema = bool(config.optimizer.get("ema_decay", 0.0))
    state = initial_state(config, model, tx, tuple(train_x.shape[1:]), train_x.dtype,
                          source.num_classes)
    ckpt = Checkpointer(workdir, config.keep_checkpoints)
    try:
        state = ckpt.restore_newest_readable(jax.tree_util.tree_map(np.asarray, state))
        if state is None:
            raise ValueError(f"no checkpoint in {str(workdir / 'checkpoints')!r} to analyse")
    finally:
        ckpt.close()
    pixels = test_x
    if preprocess:
        train_x, test_x = (eval_preprocess(config, x) for x in (train_x, test_x))
    return Run(workdir.name, config, model, state.variables(use_ema), (train_x, train_y),
               (test_x, test_y), pixels, test_rows,
               (source.num_examples, test_source.num_examples), seed,
               tuple(getattr(source, "class_names", ())))


def _eval_pipeline(config: ml_collections.ConfigDict):
    """The run's device pipeline in evaluation (pad_to, mean/std), without test-time flips."""
    # num_classes only matters to mixup/cutmix, which evaluation never applies.
    return dataclasses.replace(from_config(config.dataset, num_classes=0), flip_tta=False,
                               tta="none")


def eval_preprocess(config: ml_collections.ConfigDict, images: np.ndarray) -> np.ndarray:
    """Stored images (N, H, W, C) in [0, 1] -> the model's input: the run's device pipeline in
    evaluation (pad_to, mean/std), without test-time flips."""
    return np.asarray(_eval_pipeline(config).eval(jnp.asarray(images)))


def _layers(run: Run) -> list[graph.Layer]:
    return graph.trace(run.model, run.input_shape, variables=run.variables)


def _layer_of(run: Run, kind: str, last: bool = False) -> graph.Layer:
    """The first (or last) layer of `kind` in the run's model."""
    found = [l for l in _layers(run) if l.kind == kind]
    if not found:
        raise ValueError(f"{run.config.model.name} has no {kind} layer")
    return found[-1] if last else found[0]


def _kernel(variables: dict, module: tuple[str, ...]) -> np.ndarray:
    tree = variables["params"]
    for key in module:
        tree = tree[key]
    return np.asarray(next(leaf for leaf in jax.tree_util.tree_leaves(tree) if leaf.ndim == 4))


def _filters(run: Run, out: pathlib.Path) -> list[pathlib.Path]:
    conv = _layer_of(run, "conv")
    return [plots.filter_grid(_kernel(run.variables, conv.module), out / "filters.png",
                              f"{run.config.model.name} {conv.name}: first-layer filters")]


def _feature_maps(run: Run, out: pathlib.Path) -> list[pathlib.Path]:
    layer = _LAYER.value or _layer_of(run, "conv").name
    image = run.test[0][_INDEX.value:_INDEX.value + 1]
    maps = np.asarray(features.layer_fn(run.model, run.variables, [layer])(image)[layer])[0]
    if maps.ndim != 3:
        raise ValueError(f"layer {layer!r} output has shape {maps.shape}, not a feature map")
    row, label = run.test_rows[_INDEX.value], run.label(run.test[1][_INDEX.value])
    return [plots.feature_maps(maps, out / "feature_maps.png", image[0],
                               f"{layer} on test image {row} ({label})")]


def _activation_max(run: Run, out: pathlib.Path) -> list[pathlib.Path]:
    layer = _LAYER.value or _layer_of(run, "dense", last=True).name
    units = [int(u) for u in _UNITS.value] if _UNITS.value else list(range(10))
    key = jax.random.PRNGKey(0)
    lo, hi = run.value_range
    x0 = (lo + hi) / 2 + 0.01 * (hi - lo) * jax.random.normal(key, (len(units), *run.input_shape))
    objective = activation_max.unit_objective(run.model, run.variables, layer, units)

    def report(done: int, values: np.ndarray) -> None:
        print(f"activation_max: step {done}/{_STEPS.value}, mean objective {values.mean():.3f}",
              flush=True)

    x, history = activation_max.maximize(objective, x0, key=key, steps=_STEPS.value,
                                         clip=run.value_range, report=report)
    # The last dense layer's units are the classes: name them.
    logits = layer == _layer_of(run, "dense", last=True).name
    titles = [f"unit {u}{f' ({run.label(u)})' if logits else ''}: {history[0, i]:.1f} -> "
              f"{history[-1, i]:.1f}" for i, u in enumerate(units)]
    return [plots.image_row(np.asarray(x), titles, out / "activation_max.png",
                            f"activation maximisation of {layer}")]


def _panel(run: Run) -> np.ndarray:
    """Indices into the test sample of the panels' --num images: one per class first."""
    return panel_order(run.test[1], _NUM.value)


def _examples(run: Run) -> tuple[np.ndarray, np.ndarray]:
    index = _panel(run)
    return run.test[0][index], run.test[1][index]


def _saliency(run: Run, out: pathlib.Path) -> list[pathlib.Path]:
    x, y = _examples(run)
    maps = np.asarray(attribution.saliency(run.logits_fn(), x))
    return [plots.heatmaps(x, maps, [run.label(l) for l in y], "saliency |d logit / d x|",
                           out / "saliency.png")]


def _occlusion(run: Run, out: pathlib.Path) -> list[pathlib.Path]:
    x, y = _examples(run)
    patch = _PATCH.value or max(1, min(run.input_shape[:2]) // 4)
    stride = _PATCH_STRIDE.value or max(1, patch // 2)
    maps = attribution.occlusion(run.logits_fn(), x, patch=patch, stride=stride)
    return [plots.heatmaps(x, maps, [run.label(l) for l in y],
                           f"occlusion {patch}x{patch}/{stride}: prob. drop", out / "occlusion.png",
                           diverging=True)]


def _neighbours(run: Run, out: pathlib.Path) -> list[pathlib.Path]:
    name = features.penultimate_layer(run.model, run.input_shape)
    fn = features.layer_fn(run.model, run.variables, [name])
    bank = features.compute(fn, run.train[0], name)  # a random sample of --bank training images
    x, y = _examples(run)
    index, dist = features.nearest_neighbours(features.compute(fn, x, name), bank, k=6)
    return [plots.neighbours(x, run.train[0][index], dist, out / "neighbours.png",
                             [run.label(l) for l in y])]


def _adversarial(run: Run, out: pathlib.Path) -> list[pathlib.Path]:
    # Attacks act on the stored pixels in [0, 1]; the run's normalisation is part of the model.
    x, y = run.test_pixels, run.test[1]
    logits_fn = run.pixel_logits_fn()
    scale = float(_EPS_SCALE.value)
    eps = [float(e) / scale for e in _EPSILONS.value]

    def report(attack: str):
        return lambda e, acc: print(f"adversarial: {attack} eps {e * scale:g}/{scale:g}: accuracy "
                                    f"{100 * acc:.1f}% on {len(y)} images", flush=True)

    curves = {name: adversarial.accuracy_vs_eps(logits_fn, x, y, eps, attack=name,
                                                clip=(0.0, 1.0), report=report(name))
              for name in ("fgsm", "pgd")}
    unit = "[0, 1]" if scale == 1 else "[0, 255]"
    table = [f"| eps (of {unit}) | " + " | ".join(curves) + " |", "|---:|" + "---:|" * len(curves)]
    table += [f"| {e * scale:g} | " + " | ".join(f"{100 * curves[n][i]:.1f}%" for n in curves) + " |"
              for i, e in enumerate(eps)]
    md = out / "adversarial.md"
    md.write_text(f"Accuracy on {len(y)} of the {run.sizes[1]} test images (a random sample, "
                  f"--seed={run.seed}) under L-infinity attacks; eps in pixel units of {unit}.\n\n"
                  + "\n".join(table) + "\n")
    index = _panel(run)
    xs, ys = x[index], y[index]
    adv = np.asarray(adversarial.pgd(logits_fn, xs, ys, _EPS.value / scale, clip=(0.0, 1.0)))
    p_clean, p_adv = (np.asarray(jax.nn.softmax(logits_fn(a))) for a in (xs, adv))
    names = lambda labels: [run.label(l) for l in labels]
    panel = plots.adversarial_panel(xs, names(ys), adv, names(p_clean.argmax(1)), p_clean.max(1),
                                    names(p_adv.argmax(1)), p_adv.max(1), _EPS.value / scale,
                                    out / "adversarial.png")
    return [plots.accuracy_vs_eps([e * scale for e in eps], curves, out / "accuracy_vs_eps.png"),
            panel, md]


def _equivariance(run: Run, out: pathlib.Path) -> list[pathlib.Path]:
    layer = _LAYER.value or _layer_of(run, "conv").name
    reach = max(2, run.input_shape[1] // 4)
    result = equivariance.shift_response(run.model, run.variables, run.test[0], layer,
                                         list(range(-reach, reach + 1)))
    return [plots.equivariance(result, layer, out / "equivariance.png")]


def _curves(out: pathlib.Path) -> list[pathlib.Path]:
    runs = {}
    for workdir in _WORKDIR.value:
        records = read_jsonl(pathlib.Path(workdir) / "metrics.jsonl")
        if not records:
            raise ValueError(f"no metrics in {str(pathlib.Path(workdir) / 'metrics.jsonl')!r}")
        runs[pathlib.Path(workdir).name] = records
    return [plots.learning_curves(runs, out / "curves.png")]


def _model_and_shape(run: Run | None):
    if run is not None:
        return run.model, run.input_shape, run.variables, run.config.model.name
    spec = models.get_spec(_MODEL.value)
    shape = tuple(int(s) for s in _INPUT_SHAPE.value) if _INPUT_SHAPE.value else spec.input_shape
    return models.create(_MODEL.value), shape, None, _MODEL.value


def _summary(run: Run | None, out: pathlib.Path) -> list[pathlib.Path]:
    model, shape, variables, name = _model_and_shape(run)
    spec_dtype = jnp.float32 if run is not None else jnp.dtype(models.get_spec(name).input_dtype)
    table = summary.summary(model, shape, input_dtype=spec_dtype, variables=variables)
    path = out / "summary.md"
    path.write_text(f"# {name} on {'x'.join(map(str, shape))}\n\n" + table.to_markdown())
    return [path]


def _receptive_field(run: Run | None, out: pathlib.Path) -> list[pathlib.Path]:
    model, shape, variables, name = _model_and_shape(run)
    fields = receptive_field.receptive_field(model, shape, variables=variables)
    last = receptive_field.network_field(fields)
    path = out / "receptive_field.md"
    path.write_text(f"# {name} on {'x'.join(map(str, shape))}\n\nNetwork receptive field "
                    f"(layer {last.name}): {last.size[0]}x{last.size[1]}, jump {last.jump[0]}, "
                    f"padding {last.padding[0]}.\n\n" + receptive_field.to_markdown(fields))
    return [path]


_RUN_WHATS = {"filters": _filters, "feature_maps": _feature_maps,
              "activation_max": _activation_max, "saliency": _saliency, "occlusion": _occlusion,
              "neighbours": _neighbours, "adversarial": _adversarial,
              "equivariance": _equivariance}


def produce(whats: list[str], out: pathlib.Path) -> list[pathlib.Path]:
    """Writes every requested output under `out`; returns the paths."""
    unknown = sorted(set(whats) - set(WHATS))
    if unknown:
        raise ValueError(f"unknown --what {unknown}; expected some of {list(WHATS)}")
    needs_run = [w for w in whats if w in _RUN_WHATS]
    if (needs_run or "curves" in whats) and not _WORKDIR.value:
        raise ValueError(f"--what={','.join(needs_run or ['curves'])} needs --workdir")
    if not _WORKDIR.value and not _MODEL.value:
        raise ValueError("give --workdir=RUN or --model=NAME")
    out.mkdir(parents=True, exist_ok=True)
    run = (load_run(_WORKDIR.value[0], _BANK.value, _MAX_EXAMPLES.value, seed=_SEED.value)
           if _WORKDIR.value and set(whats) - {"curves"} else None)
    if run is not None and set(whats) & set(_RUN_WHATS):
        print(f"examples: {run.sample_note()}", flush=True)
    written: list[pathlib.Path] = []
    for what in whats:
        start = time.time()
        if what == "curves":
            paths = _curves(out)
        elif what == "summary":
            paths = _summary(run, out)
        elif what == "receptive_field":
            paths = _receptive_field(run, out)
        else:
            paths = _RUN_WHATS[what](run, out)
        print(f"{what}: wrote {', '.join(str(p) for p in paths)} ({time.time() - start:.1f} s)",
              flush=True)
        written += paths
    return written


def main(argv: list[str]) -> int:
    # Orbax logs every checkpoint operation at INFO.
    logging.set_verbosity(logging.WARNING)
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    try:
        written = produce(list(_WHAT.value), pathlib.Path(_OUT.value))
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{len(written)} files in {_OUT.value}")
    return 0


if __name__ == "__main__":
    app.run(lambda argv: sys.exit(main(argv)))
