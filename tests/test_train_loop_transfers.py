"""The training loop between log points: batches prefetched to the device two steps ahead, and
no device-to-host transfer (the preemption check included).

The loop runs its steps under jax.transfer_guard_device_to_host("disallow"), which guards GPU and
TPU transfers; on CPU JAX applies no device-to-host guard (the device's memory is the host's),
so these tests make the guarded region strict themselves: inside it, any read of an array's
value on the host fails, whether through ArrayImpl._value (float, bool, device_get, tolist) or
through np.asarray / np.array, which on CPU read the buffer directly.
"""

from __future__ import annotations

import contextlib
import threading

import jax
import numpy as np
import pytest
from jax._src.array import ArrayImpl

from cnnjax.sweep.config_file import load_config
from cnnjax.train import distributed, trainer
from cnnjax.train.sharding import make_mesh, prefetch_to_device, shardings
from conftest import REPO_ROOT


class HostRead(Exception):
    """A jax.Array's value was read on the host inside a disallowing transfer guard."""


@pytest.fixture
def strict_guard(monkeypatch):
    """jax.transfer_guard_device_to_host("disallow") that also refuses host reads on CPU."""
    state = threading.local()
    real_guard, real_value = jax.transfer_guard_device_to_host, ArrayImpl._value

    @contextlib.contextmanager
    def guard(level):
        previous = getattr(state, "level", None)
        state.level = level
        try:
            with real_guard(level):
                yield
        finally:
            state.level = previous

    def check(x):
        if getattr(state, "level", None) == "disallow" and isinstance(x, jax.Array):
            raise HostRead(f"device-to-host read of a {x.dtype}{list(x.shape)} array")

    def refusing(numpy_fn):
        def fn(x, *args, **kw):
            check(x)
            return numpy_fn(x, *args, **kw)
        return fn

    def value(self):
        check(self)
        return real_value.fget(self)

    monkeypatch.setattr(jax, "transfer_guard_device_to_host", guard)
    monkeypatch.setattr(ArrayImpl, "_value", property(value))
    monkeypatch.setattr(np, "asarray", refusing(np.asarray))
    monkeypatch.setattr(np, "array", refusing(np.array))


def test_the_strict_guard_catches_every_kind_of_host_read(strict_guard):
    x = jax.numpy.arange(3.0) + 1
    for read in (np.asarray, jax.device_get, lambda a: float(a[0]), lambda a: bool(a[0] > 1),
                 lambda a: a.tolist()):
        with jax.transfer_guard_device_to_host("disallow"):
            with pytest.raises(HostRead):
                read(x)
    np.testing.assert_array_equal(np.asarray(x), [1.0, 2.0, 3.0])  # allowed outside


def _config(steps: int, log_every: int):
    config = load_config(f"{REPO_ROOT / 'configs' / 'default.py'}:smoke")
    config.num_train_steps = steps
    config.log_every_steps = log_every
    config.eval_every_steps = steps
    config.checkpoint_every_steps = steps
    return config


def test_prefetch_keeps_two_batches_on_the_device_ahead_of_the_consumer():
    pulled = []

    def source():
        for i in range(6):
            pulled.append(i)
            yield {"image": np.full((4, 2), i, np.float32)}

    data_sharding, _ = shardings(make_mesh())
    seen = []
    for batch in prefetch_to_device(source(), data_sharding, depth=2):
        assert isinstance(batch["image"], jax.Array)
        i = int(np.asarray(batch["image"])[0, 0])
        seen.append(i)
        assert len(pulled) == min(i + 3, 6)  # this batch and the next two were sent
    assert seen == list(range(6))


def test_steps_between_log_points_transfer_nothing_to_the_host(tmp_path, strict_guard):
    """9 steps logged every 3 complete under the guard: dispatching a step, fetching the next
    batch and polling for preemption read nothing back from the device."""
    result = trainer.train(_config(9, 3), tmp_path / "run")
    assert 0.0 <= result["accuracy"] <= 1.0


def test_a_device_to_host_read_in_the_step_loop_is_refused(tmp_path, monkeypatch, strict_guard):
    """The guard is live: a preemption check that gathers a flag through the device (as a
    per-step process_allgather does) stops the run."""
    def gathers(self, step):
        return bool(np.asarray(jax.numpy.asarray(step) > 10**9))

    monkeypatch.setattr(distributed.PreemptionNotice, "reached", gathers)
    with pytest.raises(HostRead):
        trainer.train(_config(3, 3), tmp_path / "run")
