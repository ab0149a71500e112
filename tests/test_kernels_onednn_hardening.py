"""The oneDNN extension under stress (cnnjax/kernels/onednn/conv.cc, build.py): a damaged cached
library is rebuilt, never loaded; C++ failures become one-line errors; the plan cache and the
per-thread buffers stay bounded over hundreds of shapes; plans run from many threads at once;
OpenMP teams follow the cores the process was given; a reference implementation is logged."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import textwrap
import threading

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import onednn_raw
from cnnjax import cores
from cnnjax.kernels import onednn
from cnnjax.kernels.onednn import build
from conftest import REPO_ROOT
from kernel_checks import assert_close

pytestmark = pytest.mark.skipif(
    sys.platform != "linux" or platform.machine() != "x86_64",
    reason="the oneDNN extension is built on x86-64 Linux only (test_kernels_onednn checks the "
           "reason elsewhere)")


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": f"{REPO_ROOT}{os.pathsep}{REPO_ROOT / 'tests'}",
            "JAX_PLATFORMS": "cpu", **extra}


def _fake_compiler(tmp_path, library) -> tuple[str, object]:
    """A `$CXX` that "compiles" by copying the real library to its -o path and logs each build:
    the cache logic runs for real without a 10-20 s compile."""
    log = tmp_path / "builds.log"
    script = tmp_path / "fakecxx"
    script.write_text(textwrap.dedent(f"""\
        #!/bin/sh
        if [ "$1" = "--version" ]; then echo "fakecxx 1.0"; exit 0; fi
        echo build >> {log}
        while [ $# -gt 0 ]; do
          if [ "$1" = "-o" ]; then cp {library} "$2"; fi
          shift
        done
        """))
    script.chmod(0o755)
    return str(script), log


def _builds(log) -> int:
    return len(log.read_text().splitlines()) if log.exists() else 0


def test_a_truncated_or_corrupted_library_is_rebuilt_never_loaded(tmp_path, monkeypatch):
    real = build._build()
    good = real.read_bytes()
    cxx, log = _fake_compiler(tmp_path, real)
    monkeypatch.setenv("CXX", cxx)
    monkeypatch.setenv("CNNJAX_CACHE_DIR", str(tmp_path / "cache"))
    library = build._build()
    assert _builds(log) == 1 and library.read_bytes() == good
    assert build._build() == library and _builds(log) == 1  # intact: reused

    def truncate(size):
        with open(library, "r+b") as f:
            f.truncate(size)

    def flip(offset):
        data = bytearray(library.read_bytes())
        data[offset] ^= 0x40
        library.write_bytes(bytes(data))

    damage = [lambda: truncate(0), lambda: truncate(1), lambda: truncate(4096),
              lambda: truncate(len(good) // 2), lambda: truncate(len(good) - 1),
              lambda: flip(len(good) // 2), lambda: flip(len(good) - 1),
              lambda: build._record(library).unlink(),
              lambda: build._record(library).write_text("garbage")]
    for i, hurt in enumerate(damage):
        hurt()
        assert build._build() == library
        assert _builds(log) == i + 2, f"damage {i} was not rebuilt"
        assert library.read_bytes() == good

    # End to end in a fresh process: the half-length library is rebuilt, loaded and computes.
    truncate(len(good) // 2)
    script = textwrap.dedent("""
        import jax, jax.numpy as jnp, numpy as np
        from jax import lax
        from cnnjax.kernels import onednn
        lib, reason = onednn.load()
        assert reason is None, reason
        x = jnp.asarray(np.random.default_rng(0).standard_normal((1, 5, 5, 2)), jnp.float32)
        w = jnp.asarray(np.random.default_rng(1).standard_normal((3, 3, 2, 4)), jnp.float32)
        y = onednn.conv2d(x, w, (1, 1), ((1, 1), (1, 1)), (1, 1), 1)
        ref = lax.conv_general_dilated(x, w, (1, 1), ((1, 1), (1, 1)),
                                       dimension_numbers=("NHWC", "HWIO", "NHWC"))
        np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)
        print("ok")
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=300, env=_env(CXX=cxx, CNNJAX_CACHE_DIR=str(tmp_path / "cache")))
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr
    assert _builds(log) == len(damage) + 2 and library.read_bytes() == good


SPEC = onednn.ConvSpec.create((2, 6, 5, 4), (3, 3, 2, 6), (1, 1), ((1, 1), (0, 1)), (1, 1), 2)


def _operands(spec=SPEC, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(spec.input_shape).astype(np.float32),
            rng.standard_normal(spec.kernel_shape).astype(np.float32))


def _reference(spec, x, w):
    """The forward pass in PyTorch, float64 (NCHW / OIHW under the hood)."""
    (top, bottom), (left, right) = spec.padding
    tx = torch.nn.functional.pad(torch.tensor(np.float64(x)).permute(0, 3, 1, 2),
                                 (left, right, top, bottom))
    y = torch.nn.functional.conv2d(tx, torch.tensor(np.float64(w)).permute(3, 2, 0, 1),
                                   stride=spec.strides, dilation=spec.dilation, groups=spec.groups)
    return y.permute(0, 2, 3, 1).numpy()


@pytest.mark.parametrize("failure, reason", [("exception", "injected failure"),
                                             ("bad_alloc", "out of memory"),
                                             ("null", "cannot allocate")])
def test_cpp_failures_become_one_line_errors_not_aborts(failure, reason, monkeypatch):
    x, w = _operands()
    conv = jax.jit(lambda x, w: onednn.conv2d(x, w, SPEC.strides, SPEC.padding, SPEC.dilation,
                                              SPEC.groups))
    monkeypatch.setenv("CNNJAX_ONEDNN_INJECT_FAILURE", failure)
    with pytest.raises(jax.errors.JaxRuntimeError) as raised:
        conv(x, w).block_until_ready()
    message = str(raised.value)
    assert f"oneDNN convolution failed: {reason}" in message and "\n" not in message.strip()
    with pytest.raises(RuntimeError, match=f"^oneDNN convolution failed: {reason}"):
        onednn_raw.run(SPEC, "forward", x, w)
    monkeypatch.delenv("CNNJAX_ONEDNN_INJECT_FAILURE")
    assert_close(conv(x, w), _reference(SPEC, x, w), jnp.float32)  # the process lives on


def test_plans_run_from_many_threads_at_once():
    # oneDNN chooses every format (any_activations): the input, weights and output are each
    # reordered, by reorders that run on threads other than their creator's.
    spec = onednn.ConvSpec.create((2, 7, 7, 16), (3, 3, 16, 16), (1, 1), ((1, 1), (1, 1)),
                                  (1, 1), 1, any_activations=True)
    inputs = [_operands(spec, seed) for seed in range(4)]
    want = [_reference(spec, x, w) for x, w in inputs]
    errors = []

    def worker(k):
        try:
            for i in range(25):
                x, w = inputs[(k + i) % 4]
                assert_close(onednn_raw.run(spec, "forward", x, w), want[(k + i) % 4], jnp.float32)
        except Exception as e:  # re-raised below, in the test's thread
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]


def test_openmp_team_follows_the_cores_the_process_was_given(monkeypatch):
    team = build.team_size()  # this process's, restored at the end
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "3")
    assert build.team_size() == 3
    monkeypatch.delenv("SLURM_CPUS_PER_TASK")
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {4, 5})
    assert build.team_size() == cores.usable_cores() == 2
    monkeypatch.setenv("OMP_NUM_THREADS", "5")
    assert build.team_size() == 5

    # A call from a fresh thread (XLA's threads are fresh to OpenMP) runs a team of the size the
    # loader set, not OpenMP's default (every core of the machine).
    lib, x, w, seen = build.load()[0], *_operands(), []

    def call():
        seen.append(lib.CnnjaxOnednnThreads())
        onednn_raw.run(SPEC, "forward", x, w)
        seen.append(lib.CnnjaxOnednnThreads())

    try:
        lib.CnnjaxOnednnSetThreads(1)
        thread = threading.Thread(target=call)
        thread.start()
        thread.join()
    finally:
        lib.CnnjaxOnednnSetThreads(team)
    assert seen[1] == 1, seen


def test_a_reference_implementation_is_logged_once(monkeypatch, capfd):
    # CNNJAX_ONEDNN_IMPL=ref makes new plans take oneDNN's reference implementation (oneDNN has a
    # faster one for every shape cnnjax uses on this CPU). A shape no other test uses: a new plan.
    spec = onednn.ConvSpec.create((1, 7, 6, 3), (2, 3, 3, 5), (2, 1), ((1, 0), (1, 1)), (1, 2), 1)
    x, w = _operands(spec, 3)
    monkeypatch.setenv("CNNJAX_ONEDNN_IMPL", "ref")
    capfd.readouterr()
    for _ in range(2):
        assert_close(onednn_raw.run(spec, "forward", x, w), _reference(spec, x, w), jnp.float32)
    lines = capfd.readouterr().err.splitlines()
    assert lines == ["cnnjax.kernels.onednn: oneDNN runs the forward pass of the float32 "
                     "convolution of input (1, 7, 6, 3), kernel (2, 3, 3, 5), strides (2, 1), "
                     "dilation (1, 2), groups 1 on its reference implementation ref:any (slow)"]
    monkeypatch.delenv("CNNJAX_ONEDNN_IMPL")
    other = onednn.ConvSpec.create((1, 7, 6, 3), (2, 3, 3, 6), (2, 1), ((1, 0), (1, 1)), (1, 2), 1)
    onednn_raw.run(other, "forward", *_operands(other, 4))
    assert not onednn.implementation("forward", other).startswith("ref")
    assert capfd.readouterr().err == ""


@pytest.mark.slow  # ~11 CPU-seconds: 720 primitives created
def test_resident_memory_stays_bounded_over_240_shapes():
    """240 distinct convolutions of similar size (all three passes) with the plan cache capped at
    16: after the first 60 the process's resident memory grows by less than 8 MiB (4.9 MiB
    measured), where an uncapped cache grows by 32 MiB."""
    script = textwrap.dedent("""
        import ctypes
        import numpy as np
        from onednn_raw import run
        from cnnjax.kernels.onednn import ConvSpec, build
        libc = ctypes.CDLL("libc.so.6")
        def rss_mib():
            libc.malloc_trim(0)  # freed heap back to the system: what is left is held
            with open("/proc/self/status") as f:
                return next(int(l.split()[1]) for l in f if l.startswith("VmRSS")) / 1024
        marks = []
        for i in range(240):
            c, o = 1 + i % 20, 1 + i // 20
            spec = ConvSpec.create((2, 9, 9, c), (3, 3, c, o), (1, 1), ((1, 1), (1, 1)), (1, 1), 1)
            x = np.ones(spec.input_shape, np.float32)
            w = np.ones(spec.kernel_shape, np.float32)
            y = run(spec, "forward", x, w)
            run(spec, "input_grad", y, w)
            run(spec, "weight_grad", x, y)
            if i + 1 in (60, 240):
                marks.append(rss_mib())
        print(marks[0], marks[1], build.load()[0].CnnjaxOnednnCachedPlans())
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=600, env=_env(CNNJAX_ONEDNN_PLAN_CACHE="16"))
    assert done.returncode == 0, done.stderr[-2000:]
    early, late, plans = done.stdout.split()
    assert int(plans) == 16
    assert float(late) - float(early) < 8.0, (early, late)


@pytest.mark.parametrize("target,operands,attributes,out,reason", [
    ("norm_act", [(4, 3), (3, 3)], {"pass": 1, "activation": 0, "residual": False}, [(4, 3)],
     "operand 1 of pass 1 has the wrong shape or dtype"),  # ab must be (2, C)
    ("norm_act", [(4, 3)], {"pass": 9, "activation": 0, "residual": False}, [(3,), (3,)],
     "unknown pass or activation 9/0"),
    ("pool", [(8, 4, 3)], {"pass": 0, "geometry": (2, 4, 4, 3, 2, 2, 2, 2, 2, 2, 0, 0, 1, 0, 0)},
     [(4, 3, 3)], "result 0 of pass 0 does not match the geometry"),  # (N*H', W', C) = (4, 2, 3)
    ("pool", [(8, 4, 3)], {"pass": 0, "geometry": (2, 4, 4, 3, 2, 2, 0, 2, 2, 2, 0, 0, 1, 0, 0)},
     [(4, 2, 3)], "malformed geometry")])
def test_batch_norm_and_pooling_handlers_reject_malformed_calls(target, operands, attributes,
                                                                out, reason):
    # The handlers check every operand and result against the call's geometry before touching
    # memory: a wrong call is a one-line error, never a read or write out of bounds.
    onednn.build.require()
    call = jax.ffi.ffi_call(onednn.build.target_name(target),
                            [jax.ShapeDtypeStruct(s, jnp.float32) for s in out])
    attrs = {k: (np.asarray(v, np.int64) if isinstance(v, tuple) else
                 v if isinstance(v, bool) else np.int64(v)) for k, v in attributes.items()}
    with pytest.raises(jax.errors.JaxRuntimeError) as raised:
        jax.block_until_ready(call(*(jnp.ones(s, jnp.float32) for s in operands), **attrs))
    message = str(raised.value)
    assert reason in message and "\n" not in message.strip(), message
