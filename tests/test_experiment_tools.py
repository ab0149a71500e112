"""The experiments/ tools other than the benchmark harness: the input-pipeline benchmark, the
time-to-accuracy runner and the compile-time table (checking that they work and record, not
timing)."""

import sys

import pytest

from conftest import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "experiments"))
import bench_input  # noqa: E402
import compile_times  # noqa: E402
import time_to_accuracy  # noqa: E402


def test_input_benchmark_measures_every_pipeline(tmp_path, monkeypatch):
    import data_files as F
    from cnnjax.data import prepare as P

    files, _ = F.cifar_files("cifar10", per_file=12)
    F.write_cifar_tar(tmp_path / "src" / "cifar-10-python.tar.gz", files, "cifar-10-batches-py")
    P.prepare("cifar10", tmp_path / "src", data_dir=str(tmp_path / "tfds"))
    monkeypatch.setattr(bench_input, "RESULTS", tmp_path / "results" / "input.md")
    argv = ["--batch=8", "--seconds=0.3", f"--data_dir={tmp_path / 'tfds'}"]
    rows = dict(bench_input.main(argv + ["--record"]))
    for name in ("digits", "cifar10 host", "cifar10 records", "cifar10 device (this CPU)",
                 "imagenet decode+crop (train, 1 core)"):
        assert float(rows[name].replace(",", "")) > 0, (name, rows[name])
    # MNIST is not prepared in that data_dir: the row says how to prepare it instead of a rate.
    assert rows["mnist"].startswith("not measured") and "cnnjax.data.prepare mnist" in rows["mnist"]
    bench_input.main(argv + ["--only=digits", "--record"])
    recorded = (tmp_path / "results" / "input.md").read_text()
    assert recorded.count("## ") == 2 and "bench_input.py --batch=8" in recorded  # appended


def test_generated_jpegs_have_imagenet_size():
    from cnnjax.data.imagefolder import decode_image

    (raw,) = bench_input.generated_jpegs(1)
    assert decode_image(raw, "test", 3).shape == (375, 500, 3)
    with pytest.raises(ValueError, match="unknown pipelines"):
        bench_input.measure(8, 0.1, None, only=("cifar11",))


def test_time_to_accuracy_times_each_seed_and_records(tmp_path):
    record = tmp_path / "results.md"
    common = ["--config=configs/fast_cifar10.py:smoke", "--record", str(record)]
    # Any evaluation reaches a target of 1e-9: the time is that of the first evaluation.
    rows = time_to_accuracy.main(common + ["--target=1e-9", "--seeds=0,1", f"--root={tmp_path}/a"])
    assert [r["seed"] for r in rows] == [0, 1]
    for r in rows:
        assert 0 < r["seconds_to_target"] <= r["wall_seconds"]
        assert r["step_to_target"] == 2 and 0 <= r["final_accuracy"] <= 1  # the first evaluation
        assert (tmp_path / "a" / f"seed_{r['seed']}" / "metrics.jsonl").is_file()
    text = record.read_text()
    assert text.count("## ") == 1 and "Reached 1e-07%: 2 of 2 seeds" in text
    with pytest.raises(ValueError, match="already exists"):  # refused before launching anything
        time_to_accuracy.main(common + ["--target=0.5", f"--root={tmp_path}/a"])
    with pytest.raises(SystemExit):
        time_to_accuracy.main(common + ["--target=94", f"--root={tmp_path}/c"])


def test_time_to_accuracy_table_reports_seeds_that_miss_the_target():
    rows = [{"seed": 0, "seconds_to_target": 10.0, "step_to_target": 97, "final_accuracy": 0.945,
             "wall_seconds": 30.0},
            {"seed": 1, "seconds_to_target": 14.0, "step_to_target": 194, "final_accuracy": 0.941,
             "wall_seconds": 31.0},
            {"seed": 2, "seconds_to_target": None, "step_to_target": None,
             "final_accuracy": 0.935, "wall_seconds": 29.0}]
    text = time_to_accuracy.table(rows, 0.94)
    assert "| 2 | not reached | not reached | 93.50 | 29.0 |" in text
    # Mean and sample standard deviation of 10 and 14 s: 12.0 +- 2.83; finals 94.03 +- 0.503.
    assert "Reached 94%: 2 of 3 seeds" in text and "12.0 s +- 2.8" in text
    assert "94.03% +- 0.50" in text


def test_compile_times_table_records_and_flags_slow_compiles(tmp_path, monkeypatch):
    monkeypatch.setattr(compile_times, "RESULTS", tmp_path / "compile_times.md")
    rows = compile_times.main(["--models=lenet5,textcnn", "--record"])
    assert [r["model"] for r in rows] == ["lenet5", "textcnn"]  # images and token ids
    assert all(r["compile_s"] > 0 and r["planned_mb"] > 0 and r["step_s"] > 0 for r in rows)
    recorded = (tmp_path / "compile_times.md").read_text()
    assert "| lenet5 | 32x32x1 |" in recorded and "over 60 s: none" in recorded
    with pytest.raises(SystemExit, match="compile time over 1e-06 s: \\['lenet5'\\]"):
        compile_times.main(["--models=lenet5", "--limit-s=1e-6"])
    with pytest.raises(SystemExit):
        compile_times.main(["--models=lenet_5"])


def test_synthetic_device_batch_gives_token_ids_and_per_pixel_labels():
    import jax.numpy as jnp
    import numpy as np

    from cnnjax.data.synthetic import device_batch

    tokens = device_batch(3, (7,), 2, dtype=jnp.int32, vocab_size=5)
    ids = np.asarray(tokens["image"])
    assert ids.shape == (3, 7) and ids.dtype == np.int32 and ids.min() >= 1 and ids.max() < 5
    masks = device_batch(2, (4, 4, 1), 3, label_shape=(4, 4))
    labels = np.asarray(masks["label"])
    assert masks["image"].dtype == jnp.float32 and labels.shape == (2, 4, 4)
    assert labels.min() >= 0 and labels.max() < 3 and len(np.unique(labels)) > 1
