"""Mixup/CutMix pair examples within each device's shard: over 8 forced host devices the
compiled train step holds no collective-permute (a global x[::-1] does: checked as a control),
and the mixed batch equals a NumPy reference of the documented per-shard pairing."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import train_helpers as th
from conftest import REPO_ROOT

# Runs in a subprocess with 8 CPU devices; prints one JSON line.
_SCRIPT = textwrap.dedent("""
    import json
    import jax, jax.numpy as jnp, numpy as np
    from jax.sharding import NamedSharding, PartitionSpec as P
    from cnnjax.sweep.config_file import load_config
    from cnnjax.train.sharding import make_mesh, shardings
    from cnnjax.train.state import init_state
    from cnnjax.train.step import compile_steps
    from cnnjax.train.trainer import build_model_and_optimizer
    from cnnjax.data.device_pipeline import DevicePipeline

    assert jax.device_count() == 8
    mesh = make_mesh()
    data_sharding, replicated = shardings(mesh)
    out = {}
    n, size = 32, 8
    rng = np.random.default_rng(0)
    images = rng.random((n, size, size, 1), dtype=np.float32)
    labels = rng.integers(0, 10, n).astype(np.int32)
    batch = {"image": jax.device_put(images, data_sharding),
             "label": jax.device_put(labels, data_sharding)}
    for mix in ("mixup", "cutmix"):
        config = load_config("configs/default.py:smoke")
        config.batch_size = n
        config.dataset.mix, config.dataset.mix_alpha = mix, 1.0
        model, schedule, tx, _ = build_model_and_optimizer(config, 10, 10)
        state = jax.device_put(init_state(model, tx, (size, size, 1), 0, use_ema=False),
                               replicated)
        train_fn, _ = compile_steps(model, tx, schedule, config, 10, mesh, data_sharding,
                                    replicated)
        hlo = train_fn.lower(state, batch).compile().as_text()
        out[mix + "_permutes"] = hlo.count("collective-permute")
        pipeline = DevicePipeline(mix=mix, mix_alpha=1.0, num_classes=10, mesh=mesh)
        key = jax.random.PRNGKey(3)
        mixed = jax.jit(pipeline.train)(batch, key)
        out[mix] = {"image": np.asarray(mixed["image"]).tolist(),
                    "label": np.asarray(mixed["label"]).tolist(),
                    "mix_key": np.asarray(jax.random.split(key)[1]).tolist()}
    # The control: pairing over the global batch moves images between devices.
    rev = jax.jit(lambda x: 0.5 * x + 0.5 * x[::-1], in_shardings=data_sharding,
                  out_shardings=data_sharding)
    out["global_permutes"] = rev.lower(batch["image"]).compile().as_text().count(
        "collective-permute")
    out["images"], out["labels"] = images.tolist(), labels.tolist()
    print("RESULT " + json.dumps(out))
""")


@pytest.fixture(scope="module")
def sharded() -> dict:
    proc = subprocess.run([sys.executable, "-c", _SCRIPT], cwd=REPO_ROOT, env=th.env(8),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(l for l in proc.stdout.splitlines() if l.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


def _pairs(n: int, devices: int) -> np.ndarray:
    """The documented partner of every row: the mirror position inside its device's shard."""
    m = n // devices
    partner = np.empty(n, int)
    for s in range(devices):
        for r in range(m):
            partner[s * m + r] = s * m + (m - 1 - r)
    return partner


def _one_hot(labels: np.ndarray, k: int) -> np.ndarray:
    out = np.zeros((len(labels), k))
    out[np.arange(len(labels)), labels] = 1.0
    return out


@pytest.mark.parametrize("mix", ["mixup", "cutmix"])
def test_the_compiled_mixing_step_moves_no_images_between_devices(sharded, mix):
    assert sharded["global_permutes"] > 0  # the check can see a cross-device pairing
    assert sharded[mix + "_permutes"] == 0


def test_mixup_pairs_each_row_with_its_mirror_in_its_shard(sharded):
    import jax  # noqa: PLC0415 - the draw of lambda, as the pipeline makes it

    images, labels = np.asarray(sharded["images"], np.float64), np.asarray(sharded["labels"])
    lam = float(jax.random.beta(np.asarray(sharded["mixup"]["mix_key"], np.uint32), 1.0, 1.0))
    partner = _pairs(len(labels), 8)
    want_x = lam * images + (1 - lam) * images[partner]
    want_y = lam * _one_hot(labels, 10) + (1 - lam) * _one_hot(labels[partner], 10)
    np.testing.assert_allclose(sharded["mixup"]["image"], want_x, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(sharded["mixup"]["label"], want_y, rtol=1e-5, atol=1e-6)
    assert not np.allclose(want_x, lam * images + (1 - lam) * images[::-1])  # not global


def test_cutmix_pastes_from_the_mirror_row_of_the_same_shard(sharded):
    images, labels = np.asarray(sharded["images"]), np.asarray(sharded["labels"])
    out = np.asarray(sharded["cutmix"]["image"])
    soft = np.asarray(sharded["cutmix"]["label"])
    partner = _pairs(len(labels), 8)
    from_self = np.isclose(out, images)
    from_partner = np.isclose(out, images[partner]) & ~from_self
    assert np.all(from_self | np.isclose(out, images[partner]))  # every pixel from the pair
    # One box for the whole batch (every device uses the same draw); its area weights the labels.
    pasted = from_partner.reshape(len(labels), -1)
    box = pasted.any(axis=0)
    area = box.mean()
    assert 0 < area < 1, "the drawn box should paste a strict part of the image"
    np.testing.assert_array_equal(pasted, np.broadcast_to(box, pasted.shape))
    want = (1 - area) * _one_hot(labels, 10) + area * _one_hot(labels[partner], 10)
    np.testing.assert_allclose(soft, want, rtol=1e-5, atol=1e-6)
