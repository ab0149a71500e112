"""cnnjax.ops convolutions against float64 NumPy loops (tests/reference.py) and PyTorch."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import reference as ref
from cnnjax import ops

PAD_FORMS = ["int", "pair", "pairs", "VALID", "SAME", "FULL"]


def _padding(form, rng, kh, kw):
    if form == "int":
        p = int(rng.integers(0, 3))
        return p, ((p, p), (p, p))
    if form == "pair":
        p = (int(rng.integers(0, 3)), int(rng.integers(0, 3)))
        return p, ((p[0], p[0]), (p[1], p[1]))
    if form == "pairs":
        p = tuple((int(rng.integers(0, 3)), int(rng.integers(0, 3))) for _ in range(2))
        return p, p
    return form, None


def _random_case(seed):
    rng = np.random.default_rng(seed)
    groups = int(rng.choice([1, 2, 3]))
    cin, cout = groups * int(rng.integers(1, 3)), groups * int(rng.integers(1, 3))
    kh, kw = int(rng.integers(1, 4)), int(rng.integers(1, 4))
    stride = (int(rng.integers(1, 3)), int(rng.integers(1, 4)))
    dilation = (int(rng.integers(1, 3)), int(rng.integers(1, 3)))
    h, w = int(rng.integers(7, 12)), int(rng.integers(7, 12))
    form = PAD_FORMS[seed % len(PAD_FORMS)]
    mode = ["zeros", "reflect", "replicate", "circular"][(seed // len(PAD_FORMS)) % 4]
    padding, pads = _padding(form, rng, kh, kw)
    ext = [(k - 1) * d + 1 for k, d in zip((kh, kw), dilation)]
    if pads is None:
        if form == "VALID":
            pads = ((0, 0), (0, 0))
        elif form == "FULL":
            pads = tuple((e - 1, e - 1) for e in ext)
        else:
            pads = (ref.same_pads(h, kh, stride[0], dilation[0]), ref.same_pads(w, kw, stride[1], dilation[1]))
    if mode == "reflect":  # NumPy and PyTorch reflect need padding < size
        pads = tuple((min(lo, s - 1), min(hi, s - 1)) for (lo, hi), s in zip(pads, (h, w)))
        padding = pads
    x = rng.standard_normal((2, h, w, cin)).astype(np.float32)
    wt = rng.standard_normal((kh, kw, cin // groups, cout)).astype(np.float32)
    b = rng.standard_normal(cout).astype(np.float32)
    return x, wt, b, dict(stride=stride, padding=padding, dilation=dilation, groups=groups,
                          padding_mode=mode), pads


@pytest.mark.parametrize("seed", range(48))
def test_conv2d_matches_float64_loops(seed):
    x, w, b, kw, pads = _random_case(seed)
    got = ops.conv2d(jnp.asarray(x), jnp.asarray(w), jnp.asarray(b), **kw)
    want = ref.conv2d(x, w, b, kw["stride"], pads, kw["dilation"], kw["groups"], kw["padding_mode"])
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("mode", ["zeros", "reflect", "replicate", "circular"])
def test_padding_modes_match_pytorch(mode):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 7, 8, 4)).astype(np.float32)
    w = rng.standard_normal((3, 3, 2, 6)).astype(np.float32)
    conv = torch.nn.Conv2d(4, 6, 3, stride=2, padding=(1, 2), groups=2, bias=False, padding_mode=mode)
    conv.weight.data = torch.tensor(w).permute(3, 2, 0, 1)
    want = conv(torch.tensor(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).detach().numpy()
    got = ops.conv2d(jnp.asarray(x), jnp.asarray(w), stride=2, padding=(1, 2), groups=2, padding_mode=mode)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)


def test_conv1d_matches_loop_and_pytorch():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((3, 17, 4)).astype(np.float32)
    w = rng.standard_normal((5, 2, 6)).astype(np.float32)
    got = ops.conv1d(jnp.asarray(x), jnp.asarray(w), stride=2, padding=2, dilation=2, groups=2)
    want = ref.conv2d(x[:, None], w[None], None, (1, 2), ((0, 0), (2, 2)), (1, 2), 2)[:, 0]
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4, atol=1e-5)
    t = torch.nn.functional.conv1d(torch.tensor(x).permute(0, 2, 1), torch.tensor(w).permute(2, 1, 0),
                                   stride=2, padding=2, dilation=2, groups=2)
    np.testing.assert_allclose(np.asarray(got), t.permute(0, 2, 1).numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("h,w,cin,cout,k,s,p,op,d,g", [
    (5, 6, 4, 6, 3, 2, 1, 1, 1, 2), (4, 4, 3, 5, 4, 3, 2, 0, 1, 1), (3, 5, 2, 4, 3, 1, 3, 0, 2, 2),
    (6, 6, 4, 4, 2, 2, 0, 1, 1, 4), (1, 1, 3, 2, 3, 2, 0, 1, 1, 1)])
def test_conv_transpose2d_matches_pytorch(h, w, cin, cout, k, s, p, op, d, g):
    rng = np.random.default_rng(h * 100 + k)
    x = rng.standard_normal((2, h, w, cin)).astype(np.float32)
    wt = rng.standard_normal((k, k, cin, cout // g)).astype(np.float32)
    b = rng.standard_normal(cout).astype(np.float32)
    got = ops.conv_transpose2d(jnp.asarray(x), jnp.asarray(wt), jnp.asarray(b), stride=s, padding=p,
                               output_padding=op, dilation=d, groups=g)
    want = torch.nn.functional.conv_transpose2d(
        torch.tensor(x).permute(0, 3, 1, 2), torch.tensor(wt).permute(2, 3, 0, 1), torch.tensor(b),
        stride=s, padding=p, output_padding=op, dilation=d, groups=g).permute(0, 2, 3, 1).numpy()
    assert got.shape == want.shape == (2, (h - 1) * s - 2 * p + d * (k - 1) + op + 1,
                                       (w - 1) * s - 2 * p + d * (k - 1) + op + 1, cout)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4, atol=1e-4)


def test_conv_transpose2d_is_the_adjoint_of_conv2d():
    # <conv2d(x, w'), y> == <x, conv_transpose2d(y, w)> for w' = w.transpose(0, 1, 3, 2).
    rng = np.random.default_rng(3)
    x = jnp.asarray(rng.standard_normal((2, 9, 8, 4)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((3, 3, 6, 4)), jnp.float32)  # (kh, kw, C_in=6, C_out=4)
    fwd = ops.conv2d(x, w.transpose(0, 1, 3, 2), stride=2, padding=1)
    y = jnp.asarray(rng.standard_normal(fwd.shape), jnp.float32)
    back = ops.conv_transpose2d(y, w, stride=2, padding=1, output_padding=(0, 1))  # 8 = (4-1)2-2+3+1
    assert back.shape == x.shape
    np.testing.assert_allclose(float(jnp.vdot(fwd, y)), float(jnp.vdot(x, back)), rtol=1e-4)


def test_depthwise_and_separable():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 8, 8, 3)).astype(np.float32)
    wd = rng.standard_normal((3, 3, 1, 6)).astype(np.float32)  # multiplier 2
    wp = rng.standard_normal((1, 1, 6, 5)).astype(np.float32)
    got = ops.depthwise_conv2d(jnp.asarray(x), jnp.asarray(wd), stride=2, padding="SAME")
    pads = (ref.same_pads(8, 3, 2, 1),) * 2
    want = np.stack([ref.conv2d(x[..., c:c + 1], wd[..., 2 * c + m:2 * c + m + 1], None, (2, 2), pads)[..., 0]
                     for c in range(3) for m in range(2)], axis=-1)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4, atol=1e-5)
    sep = ops.separable_conv2d(jnp.asarray(x), jnp.asarray(wd), jnp.asarray(wp), stride=2, padding="SAME")
    np.testing.assert_allclose(np.asarray(sep), np.einsum("nhwc,co->nhwo", want, wp[0, 0]), rtol=1e-4, atol=1e-4)


def test_correlate_vs_convolve():
    rng = np.random.default_rng(5)
    a, k = rng.standard_normal((6, 7)), rng.standard_normal((3, 2))
    corr = np.array([[np.sum(a[i:i + 3, j:j + 2] * k) for j in range(6)] for i in range(4)])
    conv = np.array([[np.sum(a[i:i + 3, j:j + 2] * k[::-1, ::-1]) for j in range(6)] for i in range(4)])
    np.testing.assert_allclose(np.asarray(ops.correlate2d(jnp.asarray(a, jnp.float32), jnp.asarray(k, jnp.float32))), corr, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(ops.convolve2d(jnp.asarray(a, jnp.float32), jnp.asarray(k, jnp.float32))), conv, rtol=1e-5, atol=1e-5)
    full = ops.convolve2d(jnp.asarray(a, jnp.float32), jnp.asarray(k, jnp.float32), mode="full")
    np.testing.assert_allclose(np.asarray(full), _full_conv(a, k), rtol=1e-5, atol=1e-5)


def _full_conv(a, k):
    out = np.zeros((a.shape[0] + k.shape[0] - 1, a.shape[1] + k.shape[1] - 1))
    for i in range(a.shape[0]):
        for j in range(a.shape[1]):
            out[i:i + k.shape[0], j:j + k.shape[1]] += a[i, j] * k
    return out


def test_backprop_is_convolution():
    """dL/dx = full convolution of dL/dy with the 180-degree-rotated kernel; dL/dw = correlation
    of x with dL/dy (stride 1, single channel, as the lectures derive it)."""
    rng = np.random.default_rng(6)
    x = rng.standard_normal((7, 6))
    w = rng.standard_normal((3, 3))
    g = rng.standard_normal((5, 4))  # upstream gradient, the output's shape
    f = lambda x_, w_: jnp.vdot(ops.conv2d(x_[None, :, :, None], w_[:, :, None, None])[0, :, :, 0], g)
    dx, dw = jax.grad(f, argnums=(0, 1))(jnp.asarray(x, jnp.float32), jnp.asarray(w, jnp.float32))
    np.testing.assert_allclose(np.asarray(dx), _full_conv(g, w), rtol=1e-4, atol=1e-4)
    dw_ref = np.array([[np.sum(x[u:u + 5, v:v + 4] * g) for v in range(3)] for u in range(3)])
    np.testing.assert_allclose(np.asarray(dw), dw_ref, rtol=1e-4, atol=1e-4)


def test_circular_padding_makes_convolution_exactly_shift_equivariant():
    rng = np.random.default_rng(7)
    x = jnp.asarray(rng.integers(-4, 5, (1, 8, 8, 2)), jnp.float32)  # integers: exact in float32
    w = jnp.asarray(rng.integers(-3, 4, (3, 3, 2, 3)), jnp.float32)
    f = lambda z: ops.conv2d(z, w, padding="SAME", padding_mode="circular")
    shift = lambda z: jnp.roll(z, (2, -3), axis=(1, 2))
    np.testing.assert_array_equal(np.asarray(f(shift(x))), np.asarray(shift(f(x))))


@pytest.mark.parametrize("bad,match", [
    (lambda: ops.conv2d(jnp.ones((1, 5, 5, 3)), jnp.ones((3, 3, 4, 2))), "input channels"),
    (lambda: ops.conv2d(jnp.ones((1, 5, 5, 4)), jnp.ones((3, 3, 2, 3)), groups=2), "groups=2"),
    (lambda: ops.conv2d(jnp.ones((5, 5, 3)), jnp.ones((3, 3, 3, 2))), "4-D"),
    (lambda: ops.conv2d(jnp.ones((1, 5, 5, 3)), jnp.ones((3, 3, 3, 2)), padding="HALF"), "'HALF'"),
    (lambda: ops.conv2d(jnp.ones((1, 5, 5, 3)), jnp.ones((3, 3, 3, 2)), padding_mode="mirror"), "'mirror'"),
    (lambda: ops.conv2d(jnp.ones((1, 5, 5, 3)), jnp.ones((3, 3, 3, 2)), stride=0), "stride"),
    (lambda: ops.conv_transpose2d(jnp.ones((1, 5, 5, 3)), jnp.ones((3, 3, 3, 2)), stride=2, output_padding=2), "output_padding"),
])
def test_bad_input_names_the_value(bad, match):
    with pytest.raises(ValueError, match=match):
        bad()


def test_a_registered_kernel_takes_the_convolution_and_none_leaves_it_to_xla():
    """cnnjax.ops.hooks: a kernel registered for "conv" receives every conv2d with explicit
    padding and its result is used; a kernel returning None leaves the call to XLA (checked
    against the float64 loops); unknown operation names are refused."""
    from cnnjax.ops import hooks

    rng = np.random.default_rng(0)
    x, w = rng.normal(size=(2, 7, 6, 4)), rng.normal(size=(3, 3, 2, 6))
    saved, calls = hooks.kernel("conv"), []

    def fake(x, w, strides, padding, dilation, groups, **kw):
        calls.append((strides, padding, dilation, groups))
        return None if len(calls) > 1 else jnp.full((2, 4, 3, 6), 7.0)

    hooks.register_kernel("conv", fake)
    try:
        taken = ops.conv2d(jnp.asarray(x, jnp.float32), jnp.asarray(w, jnp.float32), stride=2,
                           padding=1, groups=2)
        left = ops.conv2d(jnp.asarray(x, jnp.float32), jnp.asarray(w, jnp.float32), stride=2,
                          padding=1, groups=2)
    finally:
        hooks.register_kernel("conv", saved)
    assert calls == [((2, 2), ((1, 1), (1, 1)), (1, 1), 2)] * 2
    np.testing.assert_array_equal(np.asarray(taken), 7.0)
    want = ref.conv2d(x, w, stride=(2, 2), pads=((1, 1), (1, 1)), groups=2)
    np.testing.assert_allclose(np.asarray(left), want, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="'convolution'.*expected one of"):
        hooks.register_kernel("convolution", fake)
    with pytest.raises(ValueError, match="'batchnorm'"):
        hooks.kernel("batchnorm")
