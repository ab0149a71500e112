"""The README's code examples run as written and compute what they say, against PyTorch."""

import math
import re

import numpy as np
import torch

import torch_resnet as tr
from conftest import REPO_ROOT


def _readme_network_loss_torch(ns, params, stats) -> tuple[float, list]:
    """The README's network (3x3 stem + ReLU, basic blocks with option-A shortcuts in training
    mode, global average pool, linear head, mean cross-entropy) in float64 PyTorch."""
    x = torch.tensor(np.asarray(ns["x"], np.float64).transpose(0, 3, 1, 2))
    p, s = tr.to_torch(params), tr.to_torch(stats)
    y = torch.relu(torch.nn.functional.conv2d(x, p["stem"], padding=1))
    new = []
    for bp, bs, (_, _, stride) in zip(p["blocks"], s, ns["layout"]):
        y, n = tr.block("basic", bp, bs, y, stride=stride, train=True, shortcut="A")
        new.append(n)
    logits = y.mean((2, 3)) @ p["head"]
    labels = torch.tensor(np.asarray(ns["labels"], np.int64))
    return float(torch.nn.functional.cross_entropy(logits, labels)), new


def test_functional_example_trains():
    readme = (REPO_ROOT / "README.md").read_text()
    code = re.search(r"<!-- functional-example -->\n```python\n(.*?)```", readme, re.S).group(1)
    ns: dict = {}
    exec(compile(code, "README.md", "exec"), ns)
    # The head starts at zero: uniform predictions, loss ln 10, as the example prints.
    first, _ = ns["loss_fn"](_initial(ns), ns["stats"], ns["x"], ns["labels"])
    assert math.isclose(float(first), math.log(10), rel_tol=1e-6)
    # After training: the example's loss function agrees with PyTorch's on its final
    # parameters, including the running statistics it returns, and the loss has come down.
    loss, new_stats = ns["loss_fn"](ns["params"], ns["stats"], ns["x"], ns["labels"])
    want, want_stats = _readme_network_loss_torch(ns, ns["params"], ns["stats"])
    assert math.isclose(float(loss), want, rel_tol=1e-4)
    want_stats = tr.from_torch_tree(want_stats)
    assert len(new_stats) == len(want_stats) == 3
    for got, ref in zip(new_stats, want_stats):
        assert got.keys() == ref.keys() == {"bn1", "bn2"}
        for name in ref:
            for key in ("mean", "var"):
                np.testing.assert_allclose(got[name][key], ref[name][key], rtol=1e-4, atol=1e-6)
    assert float(ns["loss"]) < 0.8 * math.log(10)  # 30 Adam steps on 64 random labels


def _initial(ns):
    """The example's parameters before training: its head is zeros, the rest irrelevant to the
    first loss (uniform logits whatever the features)."""
    return {**ns["params"], "head": np.zeros_like(np.asarray(ns["params"]["head"]))}


def test_reliability_section_names_tests_that_exist():
    readme = (REPO_ROOT / "README.md").read_text()
    section = readme[readme.index("### Reliability"):readme.index("### Multi-process runs")]
    named = re.findall(r"`(test_\w+\.py)::(test_\w+)`", section)
    assert len(named) >= 15
    for path, name in named:
        assert f"def {name}(" in (REPO_ROOT / "tests" / path).read_text(), (path, name)
