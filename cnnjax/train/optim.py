"""Optimisers and learning-rate schedules from `config.optimizer` / `config.schedule` (optax).

Weight decay is either coupled L2 (added to the gradient before the optimiser's own scaling, as
the ResNet/VGG/AlexNet papers did with SGD) or decoupled (added to the update after it, AdamW).
"""

from __future__ import annotations

import re
from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections
import optax

from cnnjax.train.lars import lars
from cnnjax.train.lookahead import lookahead_ema
from cnnjax.train.muon import NS_STEPS, muon
from cnnjax.train.param_groups import freeze_matching, path_name, scale_matching

OPTIMIZERS = ("sgd", "rmsprop", "adam", "adamw", "lars", "lamb", "muon")
# The knobs every optimiser reads, at the values that switch them off. `optimizer_config` puts
# them in every config, so each can be set from the command line
# (`--config.optimizer.agc_clip=0.01`) even when the experiment leaves it off.
COMMON_DEFAULTS = {"weight_decay": 0.0, "decoupled_weight_decay": False,
                   "decay_norm_and_bias": False, "grad_clip_norm": 0.0, "agc_clip": 0.0,
                   "ema_decay": 0.0, "label_smoothing": 0.0}


def optimizer_config(name: str, *, learning_rate: float, **fields) -> ml_collections.ConfigDict:
    """A config's `optimizer` section: `name` (one of OPTIMIZERS), the peak `learning_rate`, and
    `fields` (the optimiser's own: momentum, nesterov, rms_decay, eps, b1, b2, agc_exclude,
    trust_coefficient (lars), ns_steps, ns_dtype, renormalize (muon); per-parameter `groups`
    (see make_optimizer); or any COMMON_DEFAULTS knob) over COMMON_DEFAULTS."""
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; expected one of {OPTIMIZERS}")
    return ml_collections.ConfigDict(
        {"name": name, "learning_rate": learning_rate, **COMMON_DEFAULTS, **fields})
SCHEDULES = ("constant", "piecewise", "piecewise_linear", "warmup_cosine", "exponential",
             "reduce_on_plateau")


def make_schedule(config: ml_collections.ConfigDict, steps_per_epoch: int,
                  total_steps: int) -> optax.Schedule:
    """The learning rate as a function of the step.

    piecewise: `boundaries_epochs` (or `boundaries_steps`) with multiplicative `scales`
      (He et al.'s CIFAR recipe: 0.1, x0.1 at 32k and 48k iterations).
    warmup_cosine: linear warm-up over `warmup_epochs`, then cosine to 0.
    exponential: x `decay_rate` every `decay_epochs` (EfficientNet: 0.97 every 2.4 epochs), with
      optional warm-up.
    piecewise_linear: linear interpolation of `scales` at `knots_epochs` (the fast CIFAR trainers'
      triangle: 0 -> 1 at epoch 5 -> 0 at epoch 24), constant beyond the last knot.
    reduce_on_plateau: constant here; the reduction is a transformation in `make_optimizer`.
    Any schedule may start with `constant_warmup_steps` at `constant_warmup_scale` times the
    rate (He et al.'s ResNet-110: 0.01 for 400 iterations, then the 0.1 schedule).
    """
    base, s = config.optimizer.learning_rate, config.schedule
    name = s.name
    if name not in SCHEDULES:
        raise ValueError(f"unknown schedule {name!r}; expected one of {SCHEDULES}")
    warmup = int(round(s.get("warmup_epochs", 0.0) * steps_per_epoch))
    if name in ("constant", "reduce_on_plateau"):
        sched = optax.constant_schedule(base)
    elif name == "piecewise":
        if "boundaries_steps" in s:
            bounds = list(s.boundaries_steps)
        else:
            bounds = [int(round(e * steps_per_epoch)) for e in s.boundaries_epochs]
        if len(bounds) != len(s.scales):
            raise ValueError(f"piecewise schedule: {len(bounds)} boundaries but {len(s.scales)} scales")
        sched = optax.piecewise_constant_schedule(base, dict(zip(bounds, s.scales)))
    elif name == "piecewise_linear":
        knots = [e * steps_per_epoch for e in s.knots_epochs]
        if len(knots) != len(s.scales) or knots != sorted(knots):
            raise ValueError(f"piecewise_linear schedule: knots_epochs {list(s.knots_epochs)} must "
                             f"be increasing and match the {len(s.scales)} scales")
        knots_arr, values = jnp.asarray(knots, jnp.float32), base * jnp.asarray(s.scales, jnp.float32)
        sched = lambda step: jnp.interp(step, knots_arr, values)
    elif name == "warmup_cosine":
        if warmup:
            return optax.warmup_cosine_decay_schedule(0.0, base, warmup,
                                                      max(total_steps, warmup + 1), end_value=0.0)
        return optax.cosine_decay_schedule(base, max(total_steps, 1))
    else:  # exponential
        sched = optax.exponential_decay(base, int(round(s.decay_epochs * steps_per_epoch)),
                                        s.decay_rate, staircase=s.get("staircase", True))
    if warmup and name != "warmup_cosine":
        # join_schedules restarts the count at the boundary; the main schedule wants the true step.
        main = sched
        sched = optax.join_schedules([optax.linear_schedule(0.0, base, warmup),
                                      lambda step: main(step + warmup)], [warmup])
    hold = s.get("constant_warmup_steps", 0)
    if hold:
        low, after = base * s.constant_warmup_scale, sched
        sched = lambda step: jnp.where(step < hold, low, after(step))
    return sched


def _decay_mask(decay_norm_and_bias: bool) -> Callable:
    """params -> a tree of bools, True where weight decay applies: every leaf with
    `decay_norm_and_bias`, else only the leaves of 2 or more dimensions (kernels, embeddings),
    leaving out the 1-D and scalar ones (biases, norm scales and offsets, gains).

    Off by default: the classic recipes decay weights only (cuda-convnet's and Caffe's
    reference AlexNet/GoogLeNet set no weight cost on biases) and so do modern ones ("no bias
    decay", He et al. 2019, Bag of Tricks, sec. 3.1); configs that follow a framework decaying
    everything (the ResNet papers' Torch/Caffe) set it on, each stating its source.
    """
    return lambda params: jax.tree_util.tree_map(
        lambda p: decay_norm_and_bias or p.ndim > 1, params)


def make_optimizer(config: ml_collections.ConfigDict, schedule: optax.Schedule,
                   steps_per_epoch: int, total_steps: int) -> optax.GradientTransformation:
    """The optax chain: per-parameter gradient scales (`lr_multipliers`), clipping, then the
    update rule (coupled L2 or decoupled decay, the optimiser, the schedule), per parameter group
    where `optimizer.groups` declares them, frozen parameters (`freeze`), the Lookahead-EMA
    (`lookahead_every`, whose decay ramps over the run's `total_steps`, as
    cnnjax.train.trainer.total_steps counts them); see cnnjax.train.param_groups and .lookahead.

    `optimizer.groups`: {name: {"pattern": REGEX, field: value, ..., "schedule": {...}}}. Every
    parameter whose path ("block1/conv1/kernel") matches a group's pattern is updated by that
    group's rule: the top-level optimizer fields overridden by the group's (name, learning_rate,
    momentum, weight_decay, ...), under `config.schedule` overridden by the group's `schedule`
    fields, scaled to the group's learning rate. The rest keep the top-level rule. A parameter
    may match one group at most (airbench94_muon: Muon on the filters, SGD at three rates on
    the biases and the head, the whitening bias on its own 3-epoch schedule)."""
    o = config.optimizer
    if o.name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {o.name!r}; expected one of {OPTIMIZERS}")
    chain = []
    if o.get("lr_multipliers"):
        if o.name != "sgd":
            raise ValueError(f"optimizer.lr_multipliers scales gradients, which multiplies the "
                             f"learning rate only for sgd, not {o.name!r}")
        chain.append(scale_matching([tuple(r) for r in o.lr_multipliers]))
    if o.get("agc_clip", 0.0):
        # NFNets clip every layer but the final classifier (Brock et al. 2021, sec. 4.1).
        exclude = tuple(o.get("agc_exclude", ("head",)))
        mask = lambda params: {k: jax.tree_util.tree_map(lambda _: k not in exclude, v)
                               for k, v in params.items()}
        chain.append(optax.masked(optax.adaptive_grad_clip(o.agc_clip), mask))
    if o.get("grad_clip_norm", 0.0):
        chain.append(optax.clip_by_global_norm(o.grad_clip_norm))
    groups = o.get("groups") or {}
    if groups:
        rules = {REST: _update_rule(o, schedule)}
        for name, group in groups.items():
            group_config = _group_config(config, name, group)
            rules[name] = _update_rule(group_config.optimizer, make_schedule(
                group_config, steps_per_epoch, total_steps))
        chain.append(optax.multi_transform(rules, group_labels(
            {name: group.pattern for name, group in groups.items()})))
    else:
        chain.append(_update_rule(o, schedule))
    return _finish(chain, config, steps_per_epoch, total_steps)


REST = "rest"  # the label of the parameters in no `optimizer.groups` group
# The knobs that act on the whole tree (before or after the update rule), not per group.
_WHOLE_TREE = ("lr_multipliers", "agc_clip", "agc_exclude", "grad_clip_norm", "freeze",
               "lookahead_every", "lookahead_base", "lookahead_power", "ema_decay",
               "label_smoothing", "loss_reduction", "groups")


def _group_config(config: ml_collections.ConfigDict, name: str,
                  group: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """{"optimizer": the top-level fields overridden by the group's, "schedule": likewise}."""
    if name == REST:
        raise ValueError(f"optimizer.groups: {REST!r} names the parameters in no group; "
                         f"expected another group name")
    if not group.get("pattern"):
        raise ValueError(f"optimizer.groups.{name} has no pattern; expected a regular "
                         f"expression over parameter paths such as 'conv\\d/kernel$'")
    fields = {k: v for k, v in group.items() if k not in ("pattern", "schedule")}
    whole = sorted(set(fields) & set(_WHOLE_TREE))
    if whole:
        raise ValueError(f"optimizer.groups.{name} sets {whole}, which act on every parameter; "
                         f"expected them at the top level of config.optimizer")
    optimizer = ml_collections.ConfigDict(
        {k: v for k, v in config.optimizer.to_dict().items() if k not in _WHOLE_TREE})
    optimizer.update(fields)
    if optimizer.name not in OPTIMIZERS:
        raise ValueError(f"optimizer.groups.{name}: unknown optimizer {optimizer.name!r}; "
                         f"expected one of {OPTIMIZERS}")
    schedule = ml_collections.ConfigDict(config.schedule.to_dict())
    schedule.update(dict(group.get("schedule", {})))
    return ml_collections.ConfigDict({"optimizer": optimizer, "schedule": schedule})


def group_labels(patterns: dict[str, str]) -> Callable:
    """params -> a tree of group names: the one group whose pattern matches the parameter's
    path, else REST. A pattern that matches nothing, or a parameter two groups claim, is an
    error."""
    compiled = {name: re.compile(pattern) for name, pattern in patterns.items()}

    def labels(params):
        used = set()

        def label(path, _):
            name = path_name(path)
            hits = [g for g, regex in compiled.items() if regex.search(name)]
            if len(hits) > 1:
                raise ValueError(f"optimizer.groups {hits} all match parameter {name!r}; "
                                 f"expected at most one group per parameter")
            used.update(hits)
            return hits[0] if hits else REST

        tree = jax.tree_util.tree_map_with_path(label, params)
        unused = sorted(set(compiled) - used)
        if unused:
            names = [path_name(p) for p, _ in jax.tree_util.tree_leaves_with_path(params)]
            raise ValueError(f"optimizer.groups {unused} match no parameter; the parameters "
                             f"are {names}")
        return tree

    return labels


def _update_rule(o: ml_collections.ConfigDict,
                 schedule: optax.Schedule) -> optax.GradientTransformation:
    """Weight decay, the optimiser and the learning rate of optimizer fields `o`."""
    chain = []
    wd = o.get("weight_decay", 0.0)
    mask = _decay_mask(o.get("decay_norm_and_bias", COMMON_DEFAULTS["decay_norm_and_bias"]))
    decoupled = o.get("decoupled_weight_decay", False) or o.name in ("adamw", "lamb")
    if o.name == "lars" and o.get("decoupled_weight_decay", False):
        raise ValueError("optimizer.decoupled_weight_decay=True does not apply to lars, whose "
                         "weight decay is the paper's (in the trust ratio and the momentum); "
                         "expected False")
    if wd and not decoupled and o.name != "lars":
        chain.append(optax.add_decayed_weights(wd, mask))
    if o.name == "sgd":
        if o.get("momentum", 0.0):
            chain.append(optax.trace(decay=o.momentum, nesterov=o.get("nesterov", False)))
    elif o.name == "rmsprop":
        # TensorFlow 1's RMSPropOptimizer, which EfficientNet/MobileNet trained with (Tan & Le
        # 2019, sec. 5.2: decay 0.9, eps 1e-3, momentum 0.9): the mean square starts at 1, not 0,
        # and eps sits inside the square root; with eps 1e-3 both matter in the first steps.
        chain.append(optax.scale_by_rms(decay=o.get("rms_decay", 0.9), eps=o.get("eps", 1e-3),
                                        initial_scale=1.0, eps_in_sqrt=True))
        if o.get("momentum", 0.0):
            chain.append(optax.trace(decay=o.momentum))
    elif o.name in ("adam", "adamw"):
        chain.append(optax.scale_by_adam(b1=o.get("b1", 0.9), b2=o.get("b2", 0.999),
                                         eps=o.get("eps", 1e-8)))
    elif o.name == "lars":
        # You et al. 2017, Algorithm 1, with the decay inside (cnnjax.train.lars); the mask also
        # keeps the trust ratio off the undecayed leaves. eta 1e-3: TensorFlow's and optax's
        # default.
        return optax.chain(*chain, lars(schedule, weight_decay=wd, mask=mask,
                                        trust_coefficient=o.get("trust_coefficient", 1e-3),
                                        momentum=o.get("momentum", 0.9),
                                        nesterov=o.get("nesterov", False)))
    elif o.name == "lamb":
        # LAMB's own defaults (You et al. 2019: eps 1e-6), overridable like Adam's.
        return optax.chain(*chain, optax.lamb(schedule, b1=o.get("b1", 0.9),
                                              b2=o.get("b2", 0.999), eps=o.get("eps", 1e-6),
                                              weight_decay=wd, mask=mask))
    elif o.name == "muon":
        if wd and decoupled:
            raise ValueError("optimizer.decoupled_weight_decay=True does not apply to muon, whose "
                             "update is orthogonalised (airbench94_muon decays no filter); "
                             "expected False")
        # cnnjax.train.muon: airbench94_muon.py's update for filter banks (momentum 0.6,
        # Nesterov, 3 Newton-Schulz steps in bfloat16, weights renormalised every step).
        return optax.chain(*chain, muon(schedule, o.get("momentum", 0.6),
                                        nesterov=o.get("nesterov", True),
                                        ns_steps=o.get("ns_steps", NS_STEPS),
                                        dtype=jnp.dtype(o.get("ns_dtype", "bfloat16")),
                                        renormalize=o.get("renormalize", True)))
    if wd and decoupled:
        # Decoupled decay is scaled by the learning rate, as in AdamW (Loshchilov & Hutter 2019).
        chain.append(optax.add_decayed_weights(wd, mask))
    chain.append(optax.scale_by_learning_rate(schedule))
    return optax.chain(*chain)


def _finish(chain: list, config: ml_collections.ConfigDict, steps_per_epoch: int,
            total_steps: int) -> optax.GradientTransformation:
    s, o = config.schedule, config.optimizer
    if o.get("freeze"):
        chain.append(freeze_matching([tuple(r) for r in o.freeze], steps_per_epoch))
    if s.name == "reduce_on_plateau":
        # AlexNet's recipe: divide the rate by 10 when the (epoch-averaged) loss stops improving.
        chain.append(_from_next_step(optax.contrib.reduce_on_plateau(
            factor=s.get("factor", 0.1), patience=s.get("patience", 5),
            accumulation_size=steps_per_epoch, min_scale=s.get("min_scale", 1e-3))))
    if o.get("lookahead_every", 0):
        chain.append(lookahead_ema(o.lookahead_every, total_steps, o.get("lookahead_base", 0.95),
                                   o.get("lookahead_power", 3.0)))
    return optax.chain(*chain)


def _from_next_step(plateau: optax.GradientTransformationExtraArgs
                    ) -> optax.GradientTransformationExtraArgs:
    """reduce_on_plateau scaling each update by the scale before it: optax's applies a reduction
    already to the step that completes the epoch deciding it; as in PyTorch's
    ReduceLROnPlateau, the reduced rate starts with the next epoch."""

    def update(updates, state, params=None, **extra):
        _, new_state = plateau.update(updates, state, params, **extra)
        return jax.tree_util.tree_map(lambda u: state.scale * u, updates), new_state

    return optax.GradientTransformationExtraArgs(plateau.init, update)


def needs_loss_value(config: ml_collections.ConfigDict) -> bool:
    """Whether the optimiser's update must be given the loss (reduce-on-plateau)."""
    return config.schedule.name == "reduce_on_plateau"


def current_scale(opt_state) -> jax.Array:
    """The reduce-on-plateau multiplier inside an optimiser state (1 when there is none): the one
    the next update applies."""
    for leaf_state in jax.tree_util.tree_leaves(
            opt_state, is_leaf=lambda s: hasattr(s, "scale") and hasattr(s, "plateau_count")):
        if hasattr(leaf_state, "scale"):
            return jnp.asarray(leaf_state.scale, jnp.float32)
    return jnp.ones((), jnp.float32)
