"""experiments/gpu_pack.py --dry-run: the whole GPU measurement pack on CPU at toy sizes, in a
fresh interpreter where tensorflow_datasets and grain cannot be imported (the GPU machine has
neither); and the one-file JPEG pack it carries decodes to the pixels PIL reads from the files."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image

from cnnjax import data
from cnnjax.data.imagefolder import folder_arrays, pack_folder
from conftest import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "experiments"))
import gpu_pack  # noqa: E402

# The pack's CIFAR-10 stage runs airbench94 (issue 20); its smoke variant for the dry run.
CONFIG = "configs/airbench94.py:smoke"
MUON_CONFIG = "configs/airbench94_muon.py:smoke"


@pytest.mark.slow  # ~100 CPU-seconds; in make test-slow (CI)
def test_dry_run_runs_every_stage_without_tfds_or_grain(tmp_path):
    script = textwrap.dedent(f"""
        import runpy, sys
        sys.modules.update({{"tensorflow_datasets": None, "grain": None}})
        sys.argv = ["experiments/gpu_pack.py", "--dry-run", "--config={CONFIG}",
                    "--muon-config={MUON_CONFIG}", "--results={tmp_path}"]
        runpy.run_path("experiments/gpu_pack.py", run_name="__main__")
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=900, env={**__import__("os").environ,
                                                       "JAX_PLATFORMS": "cpu"})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    (run,) = [json.loads(line) for line in (tmp_path / "gpu_pack.jsonl").read_text().splitlines()]
    ops = {row["op"] for row in run["kernels"]}
    assert ops == {"depthwise_conv2d", "max_pool2d", "avg_pool2d", "batch_norm_act"}
    for row in run["kernels"]:
        assert row["kernel_ran"] and row["ok"] and row["max_rel_error"] <= 1e-5
        assert row["xla_us"] > 0 and row["pallas_us"] > 0
    r = run["resnet50"]
    assert r["model"] == "resnet50" and r["dtype"] == "bfloat16"
    assert r["cnnjax_images_per_sec"] > 0 and r["torch_images_per_sec"] > 0
    c = run["cifar10"]
    # airbench94:smoke's 8 steps of 16 on the toy folder (10 classes x 8 training JPEGs).
    assert c["steps"] == 8 and c["config"] == CONFIG and c["dataset"] == "CIFAR-10 (JPEG q75 copy)"
    assert 0.0 <= c["test_accuracy"] <= 1.0 and np.isfinite(c["test_loss"])
    m = run["airbench94_muon"]
    # The smoke config's 8 steps of 16 in cnnjax; the port's 8 steps of 16 (80 toy images).
    assert m["cnnjax"]["steps"] == 8 and m["cnnjax"]["config"] == MUON_CONFIG
    assert m["torch"]["steps"] == 8 and m["torch"]["batch_size"] == 16
    for r in (m["cnnjax"], m["torch"]):
        assert 0.0 <= r["test_accuracy"] <= 1.0 and 0.0 <= r["plain_accuracy"] <= 1.0
    text = (tmp_path / "gpu_pack.md").read_text()
    assert "DRY RUN" in text and "cpu" in text.lower()
    for section in ("Pallas kernels against XLA", "ResNet-50 training step", CONFIG,
                    "airbench94_muon on CIFAR-10 (JPEG q75 copy): cnnjax and the PyTorch port"):
        assert section in text


def test_a_wrong_or_absent_kernel_makes_its_rows_not_ok(monkeypatch):
    """The dry run's "ok" must be able to say no: a max-pool kernel off by 1% (it still runs
    the Pallas kernel) and one that silently computes on XLA give rows that are not ok."""
    bench = gpu_pack.bench_kernels
    operation = bench._operation
    case = next(c for c in bench.SMOKE_CASES if c.op == "max_pool2d")
    monkeypatch.setattr(bench, "SMOKE_CASES", [case])
    for wrong in ("off_by_one_percent", "on_xla"):
        def broken(case, use_kernel, wrong=wrong):
            f, shapes = operation(case, use_kernel and wrong == "off_by_one_percent")
            if use_kernel and wrong == "off_by_one_percent":
                return (lambda *a: f(*a) * 1.01), shapes
            return f, shapes
        monkeypatch.setattr(bench, "_operation", broken)
        rows = gpu_pack.kernel_stage(dry_run=True, shapes_per_kernel=1, batch=2)
        assert len(rows) == 2 and not any(r["ok"] for r in rows), (wrong, rows)
        if wrong == "on_xla":
            assert not any(r["kernel_ran"] for r in rows)
        else:
            assert all(r["kernel_ran"] and r["max_rel_error"] > 5e-3 for r in rows)


def test_packed_folder_decodes_to_the_files_pixels(tmp_path):
    root = gpu_pack.toy_jpeg_folder(tmp_path / "toy", per_class=(2, 1))
    counts = pack_folder(root, tmp_path / "toy.npz")
    assert counts == {"train": 20, "test": 10}
    for source in (root, tmp_path / "toy.npz"):
        images, labels, classes = folder_arrays(source, "test")
        assert classes == tuple(f"class{k}" for k in range(10))
        assert images.dtype == np.uint8 and images.shape == (10, 32, 32, 3)
        for k in range(10):
            want = np.asarray(Image.open(root / "test" / f"class{k}" / "0000.jpg").convert("RGB"))
            np.testing.assert_array_equal(images[k], want)
            assert labels[k] == k
    ds = data.create("folder", "train", batch_size=4, train=True,
                     source=str(tmp_path / "toy.npz"))
    assert ds.num_classes == 10 and ds.num_examples == 20 and ds.input_dtype == np.uint8
    with pytest.raises(ValueError, match="has splits"):
        folder_arrays(tmp_path / "toy.npz", "validation")
    with pytest.raises(ValueError, match="options.source"):
        data.create("folder", "train", batch_size=4, train=True)


def test_bad_arguments_are_one_line_errors(tmp_path, capsys):
    with pytest.raises(SystemExit):
        gpu_pack.main(["--pack-data", str(tmp_path / "nowhere")])
    assert "is not a folder" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        gpu_pack.main([])  # not a GPU here
    assert "--dry-run" in capsys.readouterr().err
