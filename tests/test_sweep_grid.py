"""Sweep grids, names and validation, checked against hand-written expectations."""

import ml_collections
import pytest

from cnnjax.sweep import grid


def _config():
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.optimizer = ml_collections.ConfigDict({"learning_rate": 0.1, "weight_decay": 1e-4})
    c.model = ml_collections.ConfigDict({"name": "simple_cnn", "depth": 20})
    return c


def test_product_is_cartesian_and_ordered():
    points = grid.product(**{"optimizer.learning_rate": [0.1, 0.01], "model.depth": [20, 56]})
    assert points == [
        {"optimizer.learning_rate": 0.1, "model.depth": 20},
        {"optimizer.learning_rate": 0.1, "model.depth": 56},
        {"optimizer.learning_rate": 0.01, "model.depth": 20},
        {"optimizer.learning_rate": 0.01, "model.depth": 56},
    ]


def test_zip_pairs_axes_and_composes_with_product():
    z = grid.zip_(**{"optimizer.learning_rate": [0.1, 0.2], "seed": [1, 2]})
    assert z == [{"optimizer.learning_rate": 0.1, "seed": 1},
                 {"optimizer.learning_rate": 0.2, "seed": 2}]
    both = grid.product(z, **{"model.depth": [20, 32, 44]})
    assert len(both) == 6 and both[-1] == {"optimizer.learning_rate": 0.2, "seed": 2,
                                           "model.depth": 44}


def test_zip_rejects_unequal_lengths_and_product_rejects_repeated_keys():
    with pytest.raises(ValueError, match="equal lengths"):
        grid.zip_(a=[1, 2], b=[1])
    with pytest.raises(ValueError, match="same key twice"):
        grid.product(grid.zip_(a=[1]), a=[2])


def test_names_are_readable_and_flags_round_trip():
    points = grid.resolve_points(_config(), grid.product(
        **{"optimizer.learning_rate": [0.05], "model.depth": [56]}))
    assert points[0].name == "learning_rate=0.05,depth=56"
    assert points[0].flags() == ["--config.optimizer.learning_rate=0.05", "--config.model.depth=56"]


def test_shared_leaf_names_keep_the_full_key():
    c = _config()
    c.data = ml_collections.ConfigDict({"depth": 1})
    points = grid.resolve_points(c, [{"model.depth": 20, "data.depth": 2}])
    assert points[0].name == "model.depth=20,data.depth=2"


def test_errors_empty_unknown_key_duplicate_names():
    with pytest.raises(ValueError, match="zero points"):
        grid.resolve_points(_config(), [])
    with pytest.raises(ValueError, match=r"'optimizer\.lr'.*no field 'lr'.*learning_rate"):
        grid.resolve_points(_config(), [{"optimizer.lr": 0.1}])
    with pytest.raises(ValueError, match="same run name"):
        grid.resolve_points(_config(), [{"seed": 1}, {"seed": 1}])
