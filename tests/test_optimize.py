"""The optimization core: priors against autograd and centered differences, the step
rules against torch's, the loop's jitter, blur, clipping, L-BFGS bounds, NaN
reports and seeds."""
import numpy as np
import pytest

from minicnn.images import DEFAULT_PREPROCESSING
from minicnn.techniques.optimize import (Adam, GradientStep, NormalizedStep, alpha_norm,
                                         alpha_norm_value, clip_to_range, gaussian_blur, l2,
                                         l2_norm, minimize, pixel_range, roll, total_variation,
                                         total_variation_value)

torch = pytest.importorskip("torch", reason="torch is the oracle: pip install 'minicnn[oracle]'")


def _image(shape=(2, 3, 7, 6), seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


def _torch_tv(x, beta):
    right = x[:, :, :-1, 1:] - x[:, :, :-1, :-1]
    down = x[:, :, 1:, :-1] - x[:, :, :-1, :-1]
    return ((right ** 2 + down ** 2) ** (beta / 2)).sum()


PRIORS = [
    ("l2", l2, lambda x: (x ** 2).sum()),
    ("alpha6", lambda x: alpha_norm_value(x, 6), lambda x: (x.abs() ** 6).sum()),
    ("alpha2.5", lambda x: alpha_norm_value(x, 2.5), lambda x: (x.abs() ** 2.5).sum()),
    ("tv2", lambda x: total_variation_value(x, 2), lambda x: _torch_tv(x, 2)),
    ("tv1", lambda x: total_variation_value(x, 1), lambda x: _torch_tv(x, 1)),
    ("tv1.5", lambda x: total_variation_value(x, 1.5), lambda x: _torch_tv(x, 1.5)),
]


def numerical_gradient(f, x, h=1e-6):
    """Centered differences of a scalar function, every entry."""
    grad = np.zeros_like(x)
    flat, out = x.reshape(-1), grad.reshape(-1)
    for i in range(flat.size):
        saved = flat[i]
        flat[i] = saved + h
        plus = f(x)
        flat[i] = saved - h
        minus = f(x)
        flat[i] = saved
        out[i] = (plus - minus) / (2 * h)
    return grad


@pytest.mark.parametrize("name, ours, reference", PRIORS, ids=[p[0] for p in PRIORS])
def test_prior_matches_autograd_and_centered_differences(name, ours, reference):
    x = _image()
    loss, grad = ours(x)
    xt = torch.tensor(x, requires_grad=True)
    expected = reference(xt)
    expected.backward()
    assert loss == pytest.approx(expected.item(), rel=1e-12)
    np.testing.assert_allclose(grad, xt.grad.numpy(), rtol=1e-9, atol=1e-12)
    small = _image((1, 2, 3, 4), seed=1)
    numeric = numerical_gradient(lambda z: ours(z)[0], small)
    np.testing.assert_allclose(ours(small)[1], numeric, rtol=1e-6, atol=1e-7)


def test_tv_below_two_gives_zero_gradient_on_a_flat_image():
    loss, grad = total_variation_value(np.zeros((1, 3, 4, 4)), beta=1)
    assert loss == 0 and np.all(np.isfinite(grad)) and not grad.any()


def test_objectives_add_and_scale():
    x = _image()
    combined = 3 * l2_norm() - 0.5 * total_variation(2) + alpha_norm(4)
    loss, grad = combined(x)
    parts = [l2(x), total_variation_value(x, 2), alpha_norm_value(x, 4)]
    assert loss == pytest.approx(3 * parts[0][0] - 0.5 * parts[1][0] + parts[2][0], rel=1e-12)
    np.testing.assert_allclose(grad, 3 * parts[0][1] - 0.5 * parts[1][1] + parts[2][1])


@pytest.mark.parametrize("bad", [lambda: total_variation(0.5), lambda: alpha_norm(0.2)])
def test_prior_parameters_out_of_range_are_refused(bad):
    with pytest.raises(ValueError, match="at least 1"):
        bad()


def test_adam_matches_torch_adam(dev):
    rng = np.random.default_rng(3)
    x0 = rng.standard_normal((2, 3, 4, 4))
    grads = [rng.standard_normal(x0.shape) for _ in range(5)]
    adam, x = Adam(lr=0.05, beta1=0.8, beta2=0.99, eps=1e-8), dev.array(x0)
    param = torch.tensor(x0, requires_grad=True)
    reference = torch.optim.Adam([param], lr=0.05, betas=(0.8, 0.99), eps=1e-8)
    for g in grads:
        x = adam.step(x, dev.array(g))
        param.grad = torch.tensor(g)
        reference.step()
    np.testing.assert_allclose(dev.numpy(x), param.detach().numpy(), rtol=1e-12, atol=1e-14)


def test_fixed_and_normalized_steps(dev):
    x, g = dev.array(np.ones((1, 1, 2, 2))), dev.array(np.array([[[[1.0, -3.0], [0.0, 2.0]]]]))
    np.testing.assert_allclose(dev.numpy(GradientStep(0.5).step(x, g)),
                               1 - 0.5 * dev.numpy(g))
    np.testing.assert_allclose(dev.numpy(NormalizedStep(1.5).step(x, g)),
                               1 - 1.5 * dev.numpy(g) / 1.5)
    zero = dev.array(np.zeros((1, 1, 2, 2)))
    np.testing.assert_array_equal(dev.numpy(NormalizedStep(1.5).step(x, zero)), dev.numpy(x))


def test_image_moves(dev):
    x = dev.array(_image((1, 3, 6, 5)))
    np.testing.assert_array_equal(dev.numpy(roll(roll(x, (2, -3)), (-2, 3))), dev.numpy(x))
    np.testing.assert_array_equal(dev.numpy(roll(x, (1, 0)))[:, :, 1:], dev.numpy(x)[:, :, :-1])
    from scipy import ndimage
    np.testing.assert_allclose(dev.numpy(gaussian_blur(x, 0.8)),
                               ndimage.gaussian_filter(dev.numpy(x), (0, 0, 0.8, 0.8),
                                                       mode="reflect"), rtol=1e-10, atol=1e-12)
    low, high = pixel_range(DEFAULT_PREPROCESSING, dev.xp, np.float64)
    np.testing.assert_allclose(dev.numpy(low).ravel(), -np.array([0.485, 0.456, 0.406])
                               / np.array([0.229, 0.224, 0.225]))
    np.testing.assert_allclose(dev.numpy(high).ravel(), (1 - np.array([0.485, 0.456, 0.406]))
                               / np.array([0.229, 0.224, 0.225]))
    clipped = dev.numpy(clip_to_range(3 * x, (low, high)))
    assert np.all(clipped >= dev.numpy(low) - 1e-12) and np.all(clipped <= dev.numpy(high) + 1e-12)


def _quadratic(target):
    """``||x - target||^2``: the minimizer is known."""
    return lambda x: (float(((x - target) ** 2).sum()), 2 * (x - target))


@pytest.mark.parametrize("optimizer, lr", [("gradient", 0.1), ("adam", 0.1), ("lbfgs", None)])
def test_minimize_reaches_a_known_minimum_inside_the_bounds(dev, optimizer, lr):
    target = dev.array(np.linspace(-2, 2, 2 * 3 * 4 * 4).reshape(2, 3, 4, 4))
    bounds = (dev.array(np.full((1, 3, 1, 1), -1.0)), dev.array(np.full((1, 3, 1, 1), 1.5)))
    x, history = minimize(_quadratic(target), dev.array(np.zeros((2, 3, 4, 4))), optimizer,
                          steps=200, lr=lr, bounds=bounds, progress=False)
    expected = np.clip(dev.numpy(target), -1, 1.5)
    np.testing.assert_allclose(dev.numpy(x), expected, atol=1e-3)
    assert history.loss[-1] < history.loss[0] and len(history.evaluations) == len(history)
    assert all(b >= a for a, b in zip(history.evaluations, history.evaluations[1:]))


def test_jitter_and_blur_are_reproducible_and_seed_dependent():
    target = _image((1, 3, 8, 8), seed=4)

    def run(seed):
        return minimize(_quadratic(target), np.zeros((1, 3, 8, 8)), "adam", steps=7, lr=0.1,
                        jitter=2, blur_every=3, rng=seed, progress=False)[0]
    np.testing.assert_array_equal(run(5), run(5))
    assert not np.array_equal(run(5), run(6))


def test_nan_is_reported_with_its_step():
    calls = []

    def exploding(x):
        calls.append(1)
        loss = np.nan if len(calls) == 4 else 1.0
        return loss, np.ones_like(x)
    with pytest.raises(FloatingPointError, match="step 3"):
        minimize(exploding, np.zeros((1, 1, 2, 2)), "gradient", steps=10, progress=False)


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match="steps must be a positive"):
        minimize(l2, np.zeros((1, 1, 2, 2)), steps=0)
    with pytest.raises(ValueError, match="unknown optimizer"):
        minimize(l2, np.zeros((1, 1, 2, 2)), optimizer="sgdd", steps=1)
    with pytest.raises(ValueError, match="jitter=0"):
        minimize(l2, np.zeros((1, 1, 2, 2)), optimizer="lbfgs", steps=1, jitter=2)
