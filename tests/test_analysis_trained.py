"""The analyses on a small CNN trained on the digits in the test (tests/analysis_helpers.py)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from scipy import ndimage

from analysis_helpers import trained_digits
from cnnjax.analysis import activation_max, adversarial, attribution, equivariance, features, graph


@pytest.fixture(scope="module")
def trained():
    model, variables, train, test = trained_digits()
    return model, variables, train, test, jax.jit(lambda x: model.apply(variables, x, train=False))


def _numpy_forward(params, x):
    """simple_cnn in float64 NumPy loops-free reference: {layer name: output}."""
    p = {k: {n: np.asarray(v, np.float64) for n, v in d.items()} for k, d in params.items()}

    def conv_same(x, w, b):
        n, h, wd, _ = x.shape
        xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
        patches = np.stack([xp[:, i:i + h, j:j + wd] for i in range(3) for j in range(3)], axis=3)
        return np.einsum("nhwkc,kco->nhwo", patches, w.reshape(9, *w.shape[2:])) + b

    def pool(x):
        n, h, w, c = x.shape
        return x.reshape(n, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))

    out = {"Conv_0": conv_same(np.asarray(x, np.float64), p["Conv_0"]["kernel"], p["Conv_0"]["bias"])}
    out["max_pool1"] = pool(np.maximum(out["Conv_0"], 0))
    out["Conv_1"] = conv_same(out["max_pool1"], p["Conv_1"]["kernel"], p["Conv_1"]["bias"])
    out["max_pool2"] = pool(np.maximum(out["Conv_1"], 0))
    out["Dense_0"] = out["max_pool2"].reshape(len(x), -1) @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"]
    out["Dense_1:in"] = np.maximum(out["Dense_0"], 0)
    out["Dense_1"] = out["Dense_1:in"] @ p["Dense_1"]["kernel"] + p["Dense_1"]["bias"]
    return out


def test_model_is_trained(trained):
    *_, (x, y), logits_fn = trained
    assert adversarial.accuracy(logits_fn, x, y) > 0.9


def test_layer_outputs_match_a_numpy_forward(trained):
    model, variables, _, (x, _), _ = trained
    reference = _numpy_forward(variables["params"], x[:16])
    fn = features.layer_fn(model, variables, list(reference))
    got = fn(x[:16])
    for name, want in reference.items():
        np.testing.assert_allclose(np.asarray(got[name]), want, rtol=1e-4, atol=1e-4, err_msg=name)
    assert features.penultimate_layer(model, (8, 8, 1)) == "Dense_1:in"
    with pytest.raises(ValueError, match="unknown layer 'Conv_9'"):
        graph.evaluate(model, variables, x[:2], ["Conv_9"])


def _torch_logits(params, x: torch.Tensor) -> torch.Tensor:
    """simple_cnn in float64 PyTorch (NHWC in, flattened in NHWC order as Flax does)."""
    p = {k: {n: torch.tensor(np.asarray(v, np.float64)) for n, v in d.items()} for k, d in params.items()}
    y = x.permute(0, 3, 1, 2)
    for conv in ("Conv_0", "Conv_1"):
        w = p[conv]["kernel"].permute(3, 2, 0, 1)
        y = torch.nn.functional.max_pool2d(torch.relu(
            torch.nn.functional.conv2d(y, w, p[conv]["bias"], padding=1)), 2)
    y = y.permute(0, 2, 3, 1).reshape(len(x), -1)
    y = torch.relu(y @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"])
    return y @ p["Dense_1"]["kernel"] + p["Dense_1"]["bias"]


def _torch_attack(params, x, y, eps, steps):
    """FGSM (steps=0: one step of eps) or Madry et al.'s PGD (steps of 2.5 eps / steps, projected
    onto the eps-ball and [0, 1]) with torch.autograd's input gradients of the summed
    cross-entropy; returns the accuracy on the attacked images."""
    x0 = torch.tensor(np.asarray(x, np.float64))
    labels = torch.tensor(np.asarray(y, np.int64))
    adv, size = x0.clone(), eps if steps == 0 else 2.5 * eps / steps
    for _ in range(max(steps, 1)):
        adv.requires_grad_(True)
        loss = torch.nn.functional.cross_entropy(_torch_logits(params, adv), labels, reduction="sum")
        (grad,) = torch.autograd.grad(loss, adv)
        adv = torch.minimum(torch.maximum(adv.detach() + size * grad.sign(), x0 - eps), x0 + eps)
        adv = adv.clamp(0.0, 1.0)
    with torch.no_grad():
        return float((_torch_logits(params, adv).argmax(1) == labels).double().mean())


def test_fgsm_and_pgd_accuracy_against_torch_attacks(trained):
    """accuracy_vs_eps for FGSM and 10-step PGD against the same attacks written with PyTorch on
    a float64 copy of the model: equal up to 3 of 150 images (a float32 gradient entry near zero
    may take the other sign; with the model trained through oneDNN's AVX2 convolutions, 3
    images differed at eps 0.2, measured 2026-12-02)."""
    _, variables, _, (x, y), logits_fn = trained
    x, y = x[:150], y[:150]
    eps = [0.0, 0.05, 0.1, 0.2, 0.3]
    fgsm = adversarial.accuracy_vs_eps(logits_fn, x, y, eps, attack="fgsm")
    pgd = adversarial.accuracy_vs_eps(logits_fn, x, y, eps, attack="pgd")
    params = variables["params"]
    want_fgsm = [_torch_attack(params, x, y, e, 0) for e in eps]
    want_pgd = [_torch_attack(params, x, y, e, 10) for e in eps]
    np.testing.assert_allclose(fgsm, want_fgsm, atol=3 / 150 + 1e-9)
    np.testing.assert_allclose(pgd, want_pgd, atol=3 / 150 + 1e-9)
    assert fgsm[0] == pgd[0] > 0.9 and pgd[-1] < fgsm[-1] < fgsm[0] - 0.3
    adv = np.asarray(adversarial.pgd(logits_fn, x, y, 0.1, random_start=True,
                                     key=jax.random.PRNGKey(0)))
    assert np.abs(adv - x).max() <= 0.1 + 1e-6 and adv.min() >= 0 and adv.max() <= 1
    with pytest.raises(ValueError, match="eps must be >= 0"):
        adversarial.fgsm(logits_fn, x, y, -0.1)


def _finite_difference(params, x, n, i, j, f, h=1e-6):
    """Central difference of f(float64 NumPy logits) along pixel (n, i, j); with tie-breaking
    noise on x no ReLU or max-pool switch lies within h."""
    e = np.zeros(x.shape)
    e[n, i, j, 0] = h
    up = _numpy_forward(params, x.astype(np.float64) + e)["Dense_1"]
    down = _numpy_forward(params, x.astype(np.float64) - e)["Dense_1"]
    return (f(up) - f(down)) / (2 * h)


# Blank backgrounds give equal values in max-pool windows, where the logits have kinks; a
# little noise breaks the ties.
def _noisy(x):
    return x + np.random.default_rng(0).uniform(0, 0.02, x.shape).astype(np.float32)


def test_fgsm_steps_along_the_loss_gradient_sign(trained):
    """Every pixel whose float64 finite-difference slope is at least 5% of the largest is
    stepped by +-eps along that slope's sign. Smaller slopes are left out: where the slope is
    near zero (1e-8 against 1e-5 elsewhere, measured on this model) float32 autodiff may give
    the other sign, a difference of precision, not of direction."""
    _, variables, _, (x, y), logits_fn = trained
    x, y = _noisy(x[:2]), y[:2]
    adv = np.asarray(jax.jit(lambda x: adversarial.fgsm(logits_fn, x, y, 0.05, clip=(-9.0, 9.0)))(x))

    def loss(logits):
        shifted = logits - logits.max(1, keepdims=True)
        log_probs = shifted - np.log(np.exp(shifted).sum(1, keepdims=True))
        return -log_probs[np.arange(len(y)), y].sum()

    pixels = [(n, i, j) for n in range(len(x)) for i in range(x.shape[1]) for j in range(x.shape[2])]
    slopes = np.array([_finite_difference(variables["params"], x, *p, loss) for p in pixels])
    clear = np.abs(slopes) >= 0.05 * np.abs(slopes).max()
    assert clear.sum() >= 10, clear.sum()
    for (n, i, j), slope in zip(np.array(pixels)[clear], slopes[clear]):
        assert adv[n, i, j, 0] - x[n, i, j, 0] == pytest.approx(0.05 * np.sign(slope), abs=1e-6)


PIXELS = [(0, 3, 4), (1, 2, 2), (0, 5, 5), (1, 0, 0), (0, 7, 3)]


def test_saliency_matches_finite_differences(trained):
    _, variables, _, (x, _), logits_fn = trained
    x = _noisy(x[:2])
    target = np.asarray(jnp.argmax(logits_fn(x), -1))
    sal = np.asarray(attribution.saliency(logits_fn, x))
    assert sal.shape == (2, 8, 8)
    for n, i, j in PIXELS:
        slope = _finite_difference(variables["params"], x, n, i, j, lambda z: z[n, target[n]])
        assert sal[n, i, j] == pytest.approx(abs(slope), rel=1e-3, abs=1e-4)


def test_occlusion_of_the_digit_hurts_more_than_of_the_border(trained):
    *_, (x, _), logits_fn = trained
    x = x[:50]
    occ = attribution.occlusion(logits_fn, x, patch=2, stride=1)
    assert occ.shape == (50, 7, 7)
    centre = occ[:, 2:5, 2:5].mean()
    corners = np.abs(occ[:, [0, 0, 6, 6], [0, 6, 0, 6]]).mean()
    assert centre > 0.1 and centre > 10 * corners
    # One entry recomputed by hand: square at (3, 2) set to 0.
    n = 7
    target = int(np.argmax(np.asarray(logits_fn(x[n:n + 1]))))
    hidden = x[n:n + 1].copy()
    hidden[:, 3:5, 2:4] = 0.0
    prob = lambda z: float(jax.nn.softmax(logits_fn(z))[0, target])
    assert occ[n, 3, 2] == pytest.approx(prob(x[n:n + 1]) - prob(hidden), abs=1e-5)


def test_activation_maximisation_is_normalised_gradient_ascent_like_torch(trained):
    """Without jitter and blur, maximize is x <- clip((x + lr g / mean|g|) (1 - l2), 0, 1) on the
    unit's logit: its history and final image against the same ascent with torch.autograd on a
    float64 copy of the model. With jitter and blur on (the defaults) the logit still rises."""
    model, variables, *_ = trained
    objective = activation_max.unit_objective(model, variables, "Dense_1", 3)
    x0 = 0.5 + 0.01 * jax.random.normal(jax.random.PRNGKey(0), (1, 8, 8, 1))
    x, history = activation_max.maximize(objective, x0, key=jax.random.PRNGKey(1), steps=30,
                                         jitter=0, blur_every=0, lr=0.05, l2=1e-3)
    xt, want = torch.tensor(np.asarray(x0, np.float64)), []
    for _ in range(30):
        xt.requires_grad_(True)
        unit = _torch_logits(variables["params"], xt)[:, 3]
        (g,) = torch.autograd.grad(unit.sum(), xt)
        want.append(float(unit[0].detach()))
        xt = ((xt.detach() + 0.05 * g / g.abs().mean()) * (1 - 1e-3)).clamp(0.0, 1.0)
    with torch.no_grad():
        want.append(float(_torch_logits(variables["params"], xt)[0, 3]))
    assert history.shape == (31, 1)
    np.testing.assert_allclose(history[:, 0], want, rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(np.asarray(x), xt.numpy(), atol=1e-3)
    assert want[-1] > want[0] + 5.0
    x, history = activation_max.maximize(objective, x0, key=jax.random.PRNGKey(1), steps=60)
    assert history[-1, 0] > history[0, 0] + 5.0
    assert float(jax.jit(objective)(x)[0]) == pytest.approx(history[-1, 0], rel=1e-5)
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    # A convolutional unit's objective is its value at the centre of the map: Conv_1's output
    # at (2, 2) of its 4x4 map, from the NumPy forward.
    conv = activation_max.unit_objective(model, variables, "Conv_1", 5)
    reference = _numpy_forward(variables["params"], np.asarray(x))["Conv_1"][0, 2, 2, 5]
    assert float(conv(x)[0]) == pytest.approx(reference, rel=1e-4, abs=1e-5)


def test_gaussian_blur_matches_scipy():
    image = np.random.default_rng(0).random((1, 9, 9, 2)).astype(np.float32)
    got = np.asarray(activation_max.gaussian_blur(jnp.asarray(image), 1.0))
    for c in range(2):
        want = ndimage.gaussian_filter(image[0, :, :, c].astype(np.float64), 1.0, mode="constant",
                                       truncate=2.0)
        np.testing.assert_allclose(got[0, :, :, c], want, atol=1e-5)


def test_nearest_neighbour_of_a_training_image_is_itself(trained):
    model, variables, (train_x, _), _, _ = trained
    name = features.penultimate_layer(model, (8, 8, 1))
    bank = features.compute(features.layer_fn(model, variables, [name]), train_x, name,
                            batch_size=512)
    queries = [0, 17, 400, 1000]
    index, dist = features.nearest_neighbours(bank[queries], bank, k=5)
    assert list(index[:, 0]) == queries and np.allclose(dist[:, 0], 0.0, atol=1e-3)
    brute = np.linalg.norm(bank[queries][:, None].astype(np.float64) - bank[None], axis=-1)
    np.testing.assert_allclose(dist, np.sort(brute, axis=1)[:, :5], rtol=1e-6, atol=1e-4)


def test_conv_maps_are_equivariant_and_pooled_features_nearly_invariant(trained):
    model, variables, _, (x, _), _ = trained
    r = equivariance.shift_response(model, variables, x[:100], "Conv_0", [-1, 0, 1])
    assert int(r["jump"]) == 1 and r["map_change"][1] == 0.0
    for i in (0, 2):
        assert r["aligned_change"][i] < 0.1 * r["map_change"][i]
        assert r["pooled_change"][i] < 0.2 * r["map_change"][i]
    deep = equivariance.shift_response(model, variables, x[:100], "max_pool2", [1, 4])
    assert int(deep["jump"]) == 4 and np.isnan(deep["aligned_change"][0])
    with pytest.raises(ValueError, match="not a spatial map"):
        equivariance.shift_response(model, variables, x[:4], "Dense_0", [1])
    moved = equivariance.translate(np.arange(4.0).reshape(1, 1, 4, 1), 1)
    assert moved[0, 0, :, 0].tolist() == [0.0, 0.0, 1.0, 2.0]
