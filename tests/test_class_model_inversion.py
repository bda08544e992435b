"""Class models and feature inversion: their objectives' gradients against torch
autograd (CIFAR ResNet-20 and ResNet-50, random weights, float64) and centered
differences; reproducibility; bad input; and the real CIFAR ResNet-56 reaching
the stated thresholds (softmax >= 0.99, code error < 0.15 within 120 L-BFGS
iterations, L-BFGS at least 15 % below gradient descent and Adam at 150 evaluations). The
network tests run on NumPy and, under the gpu marker, on CuPy."""
from pathlib import Path

import numpy as np
import pytest

from minicnn.techniques import (class_model, class_model_objective, code_error, compare_optimizers,
                                invert, inversion_objective)

torch = pytest.importorskip("torch", reason="torch is the oracle: pip install 'minicnn[oracle]'")
from conftest import GPU_AVAILABLE, NO_GPU_REASON, xp_params  # noqa: E402
from minicnn.backend import to_cpu  # noqa: E402
from optimize_oracle import (MODEL_PARAMS, check_against_torch, check_numerically,  # noqa: E402
                             float64_pair, model_on, on_device, torch_features, torch_tv,
                             valid_bound)

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10"
CHECKPOINT = DATA / "resnet56-4bfd9763.th"
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
           "truck"]


@pytest.fixture(scope="module", params=MODEL_PARAMS)
def model_pair(request):
    net, model, size = model_on(request)
    x = 0.5 * np.random.default_rng(1).standard_normal((2, 3, size, size))
    return net, model, on_device(net, x)


def test_class_model_objective_matches_autograd(model_pair):
    net, model, x = model_pair
    objective = class_model_objective(net, [3, 7], l2=0.02)

    def reference(xt):
        return -torch_features(model, xt)["fc"][[0, 1], [3, 7]].sum() + 0.02 * (xt ** 2).sum()
    check_against_torch(objective, reference, x)


def test_unit_objective_matches_autograd(model_pair):
    # feature visualization: "LAYER:CHANNEL" is the channel at its strongest position
    net, model, x = model_pair
    objective = class_model_objective(net, "res3:5", l2=0.02)

    def reference(xt):
        channel = torch_features(model, xt)["res3"][:, 5].flatten(1)
        return -channel.max(dim=1).values.sum() + 0.02 * (xt ** 2).sum()
    check_against_torch(objective, reference, x)


def test_inversion_objective_matches_autograd(model_pair):
    net, model, x = model_pair
    image = np.random.default_rng(2).standard_normal(x.shape)
    objective = inversion_objective(net, on_device(net, image), "res3", alpha=6,
                                    alpha_weight=0.3, beta=1.5, tv_weight=0.2)
    with torch.no_grad():
        code = torch_features(model, torch.tensor(image))["res3"]
    bound, pixels = valid_bound(), x.shape[2] * x.shape[3]

    def reference(xt):
        difference = torch_features(model, xt)["res3"] - code
        data = ((difference ** 2).sum(dim=(1, 2, 3)) / (code ** 2).sum(dim=(1, 2, 3))).sum()
        alpha = 0.3 * (xt.abs() ** 6).sum() / (pixels * bound ** 6)
        tv = 0.2 * torch_tv(xt, 1.5) / (pixels * (bound / 6.5) ** 1.5)
        return data + alpha + tv
    check_against_torch(objective, reference, x)


def test_objectives_match_centered_differences_on_a_tiny_image():
    net, _ = float64_pair(8, "cifar", 8, seed=4)
    x = 0.5 * np.random.default_rng(5).standard_normal((1, 3, 8, 8))
    check_numerically(class_model_objective(net, 2, l2=0.1), x)
    check_numerically(class_model_objective(net, "res3:5", l2=0.1), x)
    image = np.random.default_rng(6).standard_normal(x.shape)
    check_numerically(inversion_objective(net, image, "res2", alpha_weight=0.5, tv_weight=0.5), x)


def test_same_seed_same_image_bit_for_bit():
    net, _ = float64_pair(8, "cifar", 16, seed=1)
    runs = [class_model(net, 4, steps=4, init="noise", rng=seed, jitter=2, blur_every=2,
                        progress=False)[0] for seed in (3, 3, 4)]
    np.testing.assert_array_equal(runs[0], runs[1])
    assert not np.array_equal(runs[0], runs[2])
    image = np.random.default_rng(0).standard_normal((1, 3, 16, 16))
    inversions = [invert(net, image, "res2", steps=3, init="noise", progress=False)[0]
                  for _ in range(2)]
    np.testing.assert_array_equal(*inversions)


def test_bad_input_is_refused_clearly():
    net, _ = float64_pair(8, "cifar", 16)
    image = np.zeros((1, 3, 16, 16))
    with pytest.raises(KeyError, match="unknown layer name 'res9'"):
        invert(net, image, "res9", steps=2)
    with pytest.raises(KeyError, match="unknown layer name"):
        class_model(net, "res7:1", steps=2)
    with pytest.raises(ValueError, match="unknown init 'gray'"):
        invert(net, image, "res2", init="gray")
    with pytest.raises(ValueError, match="unknown init"):
        class_model(net, 1, init="photo")
    with pytest.raises(ValueError, match="steps must be a positive"):
        invert(net, image, "res2", steps=0)
    with pytest.raises(ValueError, match="steps must be a positive"):
        class_model(net, 1, steps=-1)
    with pytest.raises(ValueError, match="out of range"):
        class_model(net, 10, steps=1)
    del net.metadata["preprocessing"]
    with pytest.raises(ValueError, match="valid pixel range is unknown"):
        invert(net, image, "res2", steps=1)


def test_class_model_and_inversion_on_the_device(dev):
    net, _ = float64_pair(8, "cifar", 16, seed=2)
    cpu_image, history = class_model(net, 1, steps=3, init="noise", jitter=2, blur_every=2,
                                     progress=False)
    dev.layer(net)
    image, device_history = class_model(net, 1, steps=3, init="noise", jitter=2, blur_every=2,
                                        progress=False)
    np.testing.assert_allclose(dev.numpy(image), cpu_image, rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(device_history.loss, history.loss, rtol=1e-9)
    again, _ = class_model(net, 1, steps=3, init="noise", jitter=2, blur_every=2, progress=False)
    np.testing.assert_array_equal(dev.numpy(again), dev.numpy(image))  # bit for bit there too
    code_image = dev.array(np.random.default_rng(1).standard_normal((1, 3, 16, 16)))
    x, _ = invert(net, code_image, "res2", steps=5, progress=False)
    assert type(x) is type(code_image) and x.dtype == np.float64
    assert code_error(net, x, code_image, "res2")[0] < code_error(
        net, 0 * code_image, code_image, "res2")[0]


# -- the real CIFAR ResNet-56, on NumPy and on CuPy ------------------------------------------
@pytest.fixture(scope="module", params=xp_params)
def resnet56(request, cifar_resnet_file):
    if not CHECKPOINT.is_file():
        pytest.skip(f"real CIFAR-10 ResNet-56 not found at {CHECKPOINT}")
    if request.param == "gpu" and not GPU_AVAILABLE:
        pytest.skip(NO_GPU_REASON)
    from minicnn.io.model_file import load
    return load(cifar_resnet_file(56)).to(request.param)


def _photo(net, name, index=0):
    from minicnn.images import load_image, preprocess
    path = sorted((DATA / "test" / name).glob("*.jpg"))[index]
    return on_device(net, preprocess(load_image(path), net.metadata["preprocessing"])[None])


def _softmax(logits):
    logits = to_cpu(logits)
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_resnet56_class_models_reach_softmax_099_for_every_class(resnet56):
    classes = list(range(10))
    images, history = class_model(resnet56, classes, steps=20, progress=False)
    probabilities = _softmax(resnet56.forward(images))[np.arange(10), classes]
    assert probabilities.min() >= 0.99, probabilities
    assert history.loss[-1] < history.loss[0]
    # same seed, same image, bit for bit (noise start, jitter and blur all drawn from it)
    runs = [class_model(resnet56, 3, steps=3, init="noise", blur_every=2, rng=seed,
                        progress=False)[0] for seed in (5, 5, 6)]
    np.testing.assert_array_equal(to_cpu(runs[0]), to_cpu(runs[1]))
    assert not np.array_equal(to_cpu(runs[0]), to_cpu(runs[2]))


def test_resnet56_inversion_from_the_first_stage(resnet56):
    if not (DATA / "test").is_dir():
        pytest.skip(f"CIFAR-10 test images not found at {DATA / 'test'}")
    image = _photo(resnet56, "cat")
    start_error = code_error(resnet56, 0 * image, image, "res2")[0]
    x, history = invert(resnet56, image, "res2", steps=120, progress=False)
    error = code_error(resnet56, x, image, "res2")[0]
    assert start_error > 0.5 and error < 0.15, (start_error, error)
    assert len(history) <= 120


def test_resnet56_lbfgs_beats_gradient_descent_and_adam(resnet56):
    if not (DATA / "test").is_dir():
        pytest.skip(f"CIFAR-10 test images not found at {DATA / 'test'}")
    image = _photo(resnet56, "ship")
    # gradient descent and Adam each get the best of compare_optimizers' grid of rates
    # (1, 10, 100 and 0.01, 0.03, 0.1, 0.3); L-BFGS needs none. Adam keeps up for about 70
    # evaluations; at 150 L-BFGS is 25 % lower, a margin that float32 rounding cannot erase
    # (measured on NumPy: 0.0186 against Adam's 0.0249 and gradient descent's 0.0912), so
    # the check asks for at least 15 % lower, not merely lower
    results = compare_optimizers(resnet56, image, "res2", evaluations=150, progress=False)
    lbfgs = results["lbfgs"][1]
    assert lbfgs.evaluations[-1] <= 150
    for name in ("gradient", "adam"):
        assert lbfgs.loss[-1] < results[name][1].loss[-1], (name, lbfgs.loss[-1],
                                                            results[name][1].loss[-1])
        assert lbfgs.loss[-1] < 0.85 * results[name][1].loss[-1], (name, lbfgs.loss[-1],
                                                                   results[name][1].loss[-1])
