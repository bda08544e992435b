"""Adversarial examples on the shipped digits model, checked against PyTorch and closed forms.

The attacks are compared in float64 with the same loop written directly in
torch (the network from tests/torch_resnets.py, the preprocessing written out
again in torch): the adversarial images must be equal, image by image. The
linear explanation and DeepFool are checked against their closed forms, the
multi-crop gradient against finite differences.
"""
import numpy as np
import pytest

import minicnn
from minicnn.datasets import model_data
from minicnn.layers import Conv2d, Flatten
from minicnn.network import Network
from minicnn.techniques.adversarial import (PixelModel, fgsm, pgd, fool_linear, linear_epsilon,
                                            deepfool, fooling_image, carlini_wagner_l2,
                                            robust_accuracy, transfer_matrix, predict_classes,
                                            MultiCropModel, multicrop_predict, images_from_pixels,
                                            adversarial_training, with_extra_class)
from minicnn.techniques.adversarial.linear import sigmoid

BGR_SPEC = {"color": "BGR", "scale": 1.0, "mean": [103.9, 116.8, 123.7], "std": [57.4, 57.1, 58.4]}


@pytest.fixture(scope="module")
def digits():
    """The shipped model (float32) and 12 held-out digits as images in [0, 1]."""
    net = minicnn.load()
    data = model_data(net)
    images = images_from_pixels(np.stack([data.pixels(i) for i in range(12)]))
    return net, images, data.labels[:12]


def float64_digits(dev):
    net = minicnn.load().astype(np.float64)
    return dev.layer(net)


def torch_pgd(model, spec, images, labels, eps, alpha, steps):
    """The PGD loop (random_start False; one step of size eps is FGSM) written
    directly in torch on a torch ``model``, float64."""
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F
    scale = 255.0 * spec.get("scale", 1.0)
    mean = torch.tensor(spec["mean"], dtype=torch.float64).view(1, 3, 1, 1)
    std = torch.tensor(spec["std"], dtype=torch.float64).view(1, 3, 1, 1)
    x0 = torch.from_numpy(images)
    x = x0.clone()
    for _ in range(steps):
        x.requires_grad_(True)
        ordered = x.flip(1) if spec.get("color") == "BGR" else x
        loss = F.cross_entropy(model((ordered * scale - mean) / std),
                               torch.from_numpy(labels), reduction="sum")
        grad, = torch.autograd.grad(loss, x)
        x = torch.clamp(torch.clamp(x.detach() + alpha * grad.sign(), x0 - eps, x0 + eps), 0, 1)
    return x.numpy()


def torch_attack(net, spec, images, labels, eps, alpha, steps):
    """:func:`torch_pgd` on the torch twin of the digits ResNet-8 ``net``."""
    pytest.importorskip("torch")
    from torch_resnets import TorchCifarResNet, load_minicnn_state
    from minicnn.backend import to_cpu
    state = {k: to_cpu(v) for k, v in net.state_dict().items()}
    model = load_minicnn_state(TorchCifarResNet(8).double(), state, 8).eval()
    return torch_pgd(model, spec, images, labels, eps, alpha, steps)


@pytest.mark.parametrize("spec", [None, BGR_SPEC], ids=["digits-spec", "bgr-spec"])
def test_fgsm_and_pgd_equal_torch(digits, dev, spec):
    _, images, labels = digits
    net = float64_digits(dev)
    spec = spec or net.metadata["preprocessing"]
    model = PixelModel(net, spec)
    x = images[:4].astype(np.float64)
    eps = 8 / 255
    ours = dev.numpy(fgsm(model, dev.array(x), labels[:4], eps))
    assert ours.dtype == np.float64
    reference = torch_attack(net, spec, x, labels[:4], eps, eps, 1)
    np.testing.assert_array_equal(ours, reference)
    assert np.abs(ours - x).max() == pytest.approx(eps)
    ours = dev.numpy(pgd(model, dev.array(x), labels[:4], eps, alpha=2 / 255, steps=4,
                         random_start=False))
    np.testing.assert_array_equal(ours, torch_attack(net, spec, x, labels[:4], eps, 2 / 255, 4))
    # one step of size eps without a random start is FGSM
    one = pgd(model, x, labels[:4], eps, alpha=eps, steps=1, random_start=False)
    np.testing.assert_array_equal(one, fgsm(model, x, labels[:4], eps))


def test_pgd_stays_in_the_ball_and_the_box(digits, dev):
    net, images, labels = digits
    net = dev.layer(minicnn.load())
    x = dev.array(images[:6])
    eps = 0.1
    adversarial = pgd(net, x, labels[:6], eps, steps=5, rng=3)
    change = dev.numpy(adversarial) - images[:6]
    assert np.abs(change).max() <= eps + 1e-6
    assert 0 <= float(adversarial.min()) and float(adversarial.max()) <= 1
    assert (predict_classes(net, adversarial) != labels[:6]).all()
    # the same seed gives the same random start, another seed another one
    again = pgd(net, x, labels[:6], eps, steps=5, rng=3)
    np.testing.assert_array_equal(dev.numpy(again), dev.numpy(adversarial))
    other = pgd(net, x, labels[:6], eps, steps=1, rng=4)
    assert not np.array_equal(dev.numpy(other), dev.numpy(adversarial))
    # targeted: every digit pushed to class 7
    target = np.full(6, 7)
    reached = pgd(net, x, target, 0.2, steps=10, targeted=True, rng=0)
    assert (predict_classes(net, reached) == 7).all()


def test_fool_linear_is_exact_and_minimal(dev):
    rng = np.random.default_rng(0)
    w, x, b = rng.standard_normal(300), rng.uniform(0, 1, 300), 0.3
    for wanted in (0.01, 0.5, 0.996):
        fooled = dev.numpy(fool_linear(dev.array(w), b, dev.array(x), wanted))
        assert sigmoid(fooled @ w + b) == pytest.approx(wanted, rel=1e-12, abs=1e-14)
        eps = abs(linear_epsilon(w, b, x, wanted))
        assert np.abs(fooled - x).max() == pytest.approx(eps, rel=1e-12)
        # no change of smaller L-inf size reaches it: the most a change of size
        # 0.999 eps can do is 0.999 eps sign(w) (towards the wanted side), and random
        # changes of that size do less
        direction = np.sign(linear_epsilon(w, b, x, wanted))
        smaller = x + direction * 0.999 * eps * np.sign(w)
        random = x + direction * 0.999 * eps * rng.uniform(-1, 1, (200, 300))
        for candidate in np.vstack([smaller[None], random]):
            p = sigmoid(candidate @ w + b)
            assert (p < wanted) if direction > 0 else (p > wanted)


def affine_network():
    """An affine two-class classifier of 3x8x8 images (one 8x8 convolution), float64."""
    rng = np.random.default_rng(1)
    conv = Conv2d(3, 2, 8, rng=rng, dtype=np.float64)
    conv.params["bias"] = np.array([0.2, -0.1])
    net = Network([("conv", conv), ("flat", Flatten())])
    net.metadata.update(num_classes=2, preprocessing={"scale": 1 / 255, "mean": [0, 0, 0],
                                                      "std": [1, 1, 1]})
    return net.eval()


def test_deepfool_finds_the_closed_form_on_an_affine_classifier(dev):
    net = dev.layer(affine_network())
    images = np.random.default_rng(2).uniform(0.3, 0.7, (5, 3, 8, 8))
    weight, bias = dev.numpy(net["conv"].params["weight"]), dev.numpy(net["conv"].params["bias"])
    scores = images.reshape(5, -1) @ weight.reshape(2, -1).T + bias
    original = scores.argmax(axis=1)
    w = (weight[1] - weight[0]).ravel() * np.where(original == 0, 1, -1)[:, None]
    f = np.abs(scores[:, 1] - scores[:, 0])
    minimal = (f / (w * w).sum(axis=1))[:, None] * w  # the nearest point of the boundary
    adversarial, info = deepfool(net, dev.array(images), overshoot=0.02)
    np.testing.assert_allclose(dev.numpy(adversarial).reshape(5, -1),
                               images.reshape(5, -1) + 1.02 * minimal, rtol=1e-12, atol=1e-14)
    assert (info["steps"] == 1).all() and info["success"].all()
    np.testing.assert_allclose(info["l2"], 1.02 * np.linalg.norm(minimal, axis=1), rtol=1e-12)


def test_deepfool_steps_past_a_boundary_within_rounding(dev):
    """Images put on the affine boundary (within float64 rounding): the linear step
    is ~1e-16 long and leaves them there; the second step, 1e-4 longer than the
    linearization asks (MIN_STEP), takes each across at L2 1.02e-4."""
    net = dev.layer(affine_network())
    weight, bias = (dev.numpy(net["conv"].params[k]) for k in ("weight", "bias"))
    w, b = (weight[1] - weight[0]).ravel(), bias[1] - bias[0]
    images = np.random.default_rng(2).uniform(0.3, 0.7, (5, 3, 8, 8))
    f = images.reshape(5, -1) @ w + b
    on_boundary = images - (f / (w @ w))[:, None, None, None] * w.reshape(3, 8, 8)
    assert np.abs(on_boundary.reshape(5, -1) @ w + b).max() < 1e-14
    adversarial, info = deepfool(net, dev.array(on_boundary), overshoot=0.02)
    assert info["success"].all() and (info["steps"] <= 2).all()
    assert (info["l2"] <= 1.02e-4 + 1e-12).all()
    # the images really crossed: the affine scores, computed here, name another class
    moved = dev.numpy(adversarial).reshape(5, -1)
    np.testing.assert_array_equal((moved @ w + b > 0).astype(int), 1 - info["original"])
    np.testing.assert_allclose(info["l2"], np.linalg.norm(moved - on_boundary.reshape(5, -1),
                                                          axis=1), rtol=1e-9)


def test_fooling_image_from_noise_and_from_a_digit(digits, dev):
    _, images, labels = digits
    net = dev.layer(minicnn.load())
    fooled, info = fooling_image(net, [2, 5], "noise", rng=0)
    probs = dev.numpy(PixelModel(net).probabilities(fooled))
    assert info["reached"].all() and (probs[[0, 1], [2, 5]] >= 0.996).all()
    np.testing.assert_allclose(info["probability"], probs[[0, 1], [2, 5]], rtol=1e-5)
    start = images[labels != 8][:1]
    fooled, info = fooling_image(net, 8, dev.array(start), step=1 / 255)
    change = dev.numpy(fooled) - start
    assert info["reached"].all() and 0 < info["steps"][0]
    assert info["linf"][0] == pytest.approx(np.abs(change).max())
    assert info["linf"][0] <= info["steps"][0] / 255 + 1e-6
    assert info["l2"][0] == pytest.approx(np.linalg.norm(change), rel=1e-5)


def test_deepfool_and_carlini_wagner_fool_every_digit(digits, dev):
    _, images, labels = digits
    net = dev.layer(minicnn.load())
    x = images[:6]
    adversarial, info = deepfool(net, dev.array(x))
    predicted = predict_classes(net, adversarial)
    assert info["success"].all() and (predicted != labels[:6]).all()
    np.testing.assert_array_equal(predicted, info["adversarial"])
    cw, cw_info = carlini_wagner_l2(net, dev.array(x), labels[:6], c=1.0, steps=40, lr=0.05)
    cw = dev.numpy(cw)
    assert cw_info["success"].all() and (predict_classes(net, cw) != labels[:6]).all()
    assert 0 <= cw.min() and cw.max() <= 1
    np.testing.assert_allclose(cw_info["l2"], np.linalg.norm((cw - x).reshape(6, -1), axis=1),
                               rtol=1e-5)


def torch_carlini_wagner(net, spec, images, labels, c, kappa, steps, lr):
    """The CW-L2 loop written directly in torch: autograd of the objective and
    torch.optim.Adam on w, keeping each image's misclassified iterate of smallest L2."""
    torch = pytest.importorskip("torch")
    from torch_resnets import TorchCifarResNet, load_minicnn_state
    from minicnn.backend import to_cpu
    state = {k: to_cpu(v) for k, v in net.state_dict().items()}
    model = load_minicnn_state(TorchCifarResNet(8).double(), state, 8).eval()
    scale = 255.0 * spec.get("scale", 1.0)
    mean = torch.tensor(spec["mean"], dtype=torch.float64).view(1, 3, 1, 1)
    std = torch.tensor(spec["std"], dtype=torch.float64).view(1, 3, 1, 1)
    x0, y = torch.from_numpy(images), torch.from_numpy(labels)
    rows = torch.arange(len(y))
    w = torch.atanh((2 * x0 - 1) * (1 - 1e-6)).requires_grad_(True)
    optimizer = torch.optim.Adam([w], lr=lr, betas=(0.9, 0.999), eps=1e-8)
    best, best_l2 = x0.clone(), torch.full((len(y),), float("inf"), dtype=torch.float64)
    for _ in range(steps):
        x = (torch.tanh(w) + 1) / 2
        logits = model((x * scale - mean) / std)
        others = logits.detach().clone()
        others[rows, y] = -float("inf")
        margin = logits[rows, y] - logits[rows, others.argmax(1)]
        l2 = ((x - x0) ** 2).flatten(1).sum(1)
        better = (margin.detach() < 0) & (l2.detach() < best_l2)
        best[better], best_l2[better] = x.detach()[better], l2.detach()[better]
        optimizer.zero_grad()
        (l2 + c * torch.clamp(margin, min=-kappa)).sum().backward()
        optimizer.step()
    return best.numpy(), torch.isfinite(best_l2).numpy()


def test_carlini_wagner_equals_torch(digits, dev):
    _, images, labels = digits
    net = float64_digits(dev)
    x, y = images[:4].astype(np.float64), labels[:4]
    ours, info = carlini_wagner_l2(net, dev.array(x), y, c=1.0, kappa=0.5, steps=25, lr=0.05)
    reference, success = torch_carlini_wagner(net, net.metadata["preprocessing"], x, y,
                                              c=1.0, kappa=0.5, steps=25, lr=0.05)
    assert success.any()  # the comparison covers found iterates, not only unchanged images
    np.testing.assert_array_equal(info["success"], success)
    np.testing.assert_allclose(dev.numpy(ours), reference, rtol=0, atol=1e-9)


def test_multicrop_gradient_and_prediction(dev):
    net = dev.layer(minicnn.load().astype(np.float64))
    model = MultiCropModel(net, crops=5, flips=True, padding=2)
    rng = np.random.default_rng(0)
    x = rng.uniform(0.05, 0.95, (2, 3, 32, 32))
    # the prediction: the mean softmax of the views, made here with np.pad and slices
    padded = np.pad(x, ((0, 0), (0, 0), (2, 2), (2, 2)))
    views = [padded[:, :, dy:dy + 32, dx:dx + 32] for dy, dx in
             [(2, 2), (0, 0), (0, 4), (4, 0), (4, 4)]]
    views += [v[..., ::-1] for v in views]
    plain = PixelModel(net)
    expected = np.mean([dev.numpy(plain.probabilities(dev.array(v.copy()))) for v in views],
                       axis=0)
    np.testing.assert_allclose(dev.numpy(multicrop_predict(model, dev.array(x))), expected,
                               rtol=1e-12)
    # the loss gradient through the views against centered differences along a direction
    labels = np.array([3, 7])
    _, grad, _ = model.loss_gradient(dev.array(x), labels)
    direction = rng.standard_normal(x.shape)
    h = 1e-7  # a larger step lets ReLU inputs of the 10 views cross zero
    loss = lambda z: float(model.loss_gradient(dev.array(z), labels)[0].sum())  # noqa: E731
    numeric = (loss(x + h * direction) - loss(x - h * direction)) / (2 * h)
    assert float((dev.numpy(grad) * direction).sum()) == pytest.approx(numeric, rel=1e-6)


def test_robust_accuracy_and_transfer_matrix(digits, dev):
    _, images, labels = digits
    net = dev.layer(minicnn.load())
    clean = float((predict_classes(net, images) == labels).mean())
    result = robust_accuracy(net, images, labels, "fgsm", eps_list=(0, 0.05, 0.2))
    assert result[0] == clean
    manual = (predict_classes(net, dev.numpy(fgsm(net, images, labels, 0.05))) == labels).mean()
    assert result[0.05] == manual and result[0.2] <= result[0.05]
    with pytest.raises(ValueError, match="FGSM takes no options; steps belong to PGD"):
        robust_accuracy(net, images, labels, "fgsm", steps=3)
    other = minicnn.load()
    rng = np.random.default_rng(0)
    for layer in other.layers():
        for key, value in layer.params.items():
            layer.params[key] = value + 0.2 * value.std() * rng.standard_normal(value.shape)
    other = dev.layer(other)
    matrix, counts = transfer_matrix([net, other], [net, other], images, labels, "fgsm",
                                     eps=0.05)
    for a, source in enumerate([net, other]):
        attacked = dev.numpy(fgsm(source, images, labels, 0.05))
        for b, target in enumerate([net, other]):
            both = (predict_classes(source, images) == labels) & (
                predict_classes(target, images) == labels)
            assert counts[a, b] == both.sum()
            fooled = predict_classes(target, attacked[both]) != labels[both]
            assert matrix[a, b] == pytest.approx(fooled.mean())


def test_adversarial_training_raises_fgsm_accuracy_on_its_batch(digits, dev):
    _, images, labels = digits
    net = dev.layer(minicnn.load())
    images = dev.array(images)
    eps = 0.04
    before = (predict_classes(net, fgsm(net, images, labels, eps)) == labels).mean()
    optimizer = minicnn.SGD(net, lr=0.02, momentum=0.9)
    history = adversarial_training(net, optimizer, images, labels, eps, epochs=4, batch_size=12,
                                   rng=0, progress=False)
    after = (predict_classes(net, fgsm(net, images, labels, eps)) == labels).mean()
    assert history[-1]["adversarial_loss"] < history[0]["adversarial_loss"]
    assert after > before


def test_adversarial_training_step_equals_torch(digits, dev):
    """One batch of Goodfellow's mixed objective, written directly in torch: FGSM
    images in eval mode, then alpha * mean CE(clean) + (1 - alpha) * mean CE(FGSM)
    in one train-mode pass, one plain SGD step; every weight must agree."""
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F
    from torch_resnets import TorchCifarResNet, load_minicnn_state, torch_to_minicnn_name
    from minicnn.backend import to_cpu
    _, images, labels = digits
    net = float64_digits(dev)
    spec = net.metadata["preprocessing"]
    x, y = images[:8].astype(np.float64), labels[:8]
    eps, alpha, lr = 4 / 255, 0.3, 0.1
    state = {k: to_cpu(v) for k, v in net.state_dict().items()}
    model = load_minicnn_state(TorchCifarResNet(8).double(), state, 8).eval()
    adversarial = torch.from_numpy(torch_pgd(model, spec, x, y, eps, eps, 1))
    mean = torch.tensor(spec["mean"], dtype=torch.float64).view(1, 3, 1, 1)
    std = torch.tensor(spec["std"], dtype=torch.float64).view(1, 3, 1, 1)
    both = (torch.cat([torch.from_numpy(x), adversarial]) * 255.0 * spec.get("scale", 1.0)
            - mean) / std
    model.train()
    logits = model(both)
    target = torch.from_numpy(y)
    loss = (alpha * F.cross_entropy(logits[:8], target)
            + (1 - alpha) * F.cross_entropy(logits[8:], target))
    model.zero_grad()
    loss.backward()
    adversarial_training(net, minicnn.SGD(net, lr=lr, momentum=0.0), dev.array(x), y, eps,
                         alpha=alpha, epochs=1, batch_size=8, rng=0, progress=False)
    ours = {k: to_cpu(v) for k, v in net.state_dict().items()}
    for name, parameter in model.named_parameters():
        expected = (parameter - lr * parameter.grad).detach().numpy()
        np.testing.assert_allclose(ours[torch_to_minicnn_name(name, 8)], expected, rtol=1e-8,
                                   atol=1e-10, err_msg=name)


def test_extra_class_keeps_the_ten_digits(digits, dev):
    _, images, _ = digits
    net = dev.layer(minicnn.load())
    images = dev.array(images)
    bigger = with_extra_class(net)
    assert bigger.metadata["labels"][-1] == "adversarial"
    ours = dev.numpy(PixelModel(bigger).logits(images))
    theirs = dev.numpy(PixelModel(net).logits(images))
    np.testing.assert_allclose(ours[:, :10], theirs, rtol=1e-6)
    features = dev.numpy(net.forward(PixelModel(net).to_input(images), stop_at="global_pool"))
    fc = {k: dev.numpy(v) for k, v in bigger["fc"].params.items()}
    np.testing.assert_allclose(ours[:, 10], features @ fc["weight"][10] + fc["bias"][10],
                               rtol=1e-5, atol=1e-7)
    fgsm(bigger, images, np.full(len(images), 10), 0.01, targeted=True)  # class 10 is valid


def test_extra_class_defence_reports_where_each_image_set_lands(digits):
    """The outcome table against a recomputation: the fresh PGD row is what pgd against
    the returned 11-class network, then its predictions, give; rows sum to 1."""
    from minicnn.techniques.adversarial import EPS_LIST, extra_class_defence, predict_classes
    net, images, labels = digits
    train, train_labels, test, test_labels = images[:8], labels[:8], images[8:], labels[8:]
    eps = EPS_LIST[-1]
    bigger, outcomes = extra_class_defence(net, train, train_labels, test, test_labels, eps,
                                           epochs=1, steps=2, batch_size=4, rng=5)
    assert bigger["fc"].out_features == 11 and net["fc"].out_features == 10
    assert list(outcomes) == ["clean", "old PGD (made on the original)", "fresh PGD",
                              "fresh PGD at the runner-up"]
    for row in outcomes.values():
        assert sum(row.values()) == pytest.approx(1.0)
    seed = int(np.random.default_rng(5).integers(2**31))
    predicted = predict_classes(bigger, pgd(bigger, test, test_labels, eps, steps=2, rng=seed))
    assert outcomes["fresh PGD"] == {
        "correct": float((predicted == test_labels).mean()),
        "called adversarial": float((predicted == 10).mean()),
        "fooled": float(((predicted != test_labels) & (predicted != 10)).mean())}
    clean = predict_classes(bigger, test)
    assert outcomes["clean"]["correct"] == float((clean == test_labels).mean())


# (what is wrong, the call, the words the error must contain); ``x`` are 4 digits in
# [0, 1] on the test's device, ``y`` their labels, ``net`` the model there
BAD_INPUTS = [
    ("eps above 1", lambda net, x, y: fgsm(net, x, y, 8), r"eps = 8 is outside \[0, 1\].*8/255"),
    ("eps below 0", lambda net, x, y: pgd(net, x, y, -0.1), r"eps = -0.1 is outside \[0, 1\]"),
    ("eps list", lambda net, x, y: robust_accuracy(net, x, y, "fgsm", eps_list=(0, 8)),
     r"eps = 8 is outside \[0, 1\]"),
    ("transfer eps", lambda net, x, y: transfer_matrix([net], [net], x, y, eps=1.5),
     r"eps = 1.5 is outside \[0, 1\]"),
    ("alpha above 1", lambda net, x, y: pgd(net, x, y, 0.1, alpha=2), r"alpha = 2 is outside"),
    ("uint8 images", lambda net, x, y: fgsm(net, (x * 255).astype("uint8"), y, 0.1),
     r"received uint8; from uint8 pixels divide by 255: images.astype\(np.float32\) / 255"),
    ("0..255 images", lambda net, x, y: pgd(net, x * 255, y, 0.1),
     r"must lie in \[0, 1\], received values from 0 to 255; from 0..255 pixels divide by 255"),
    ("input-space images", lambda net, x, y: deepfool(net, x - 0.5),
     r"from -0.5 .*PixelModel\(net\).to_images\(x\)"),
    ("images for CW", lambda net, x, y: carlini_wagner_l2(net, x * 2, y), "divide by 255"),
    ("images for multi-crop", lambda net, x, y: multicrop_predict(net, x * 255), "divide by 255"),
    ("images for robustness", lambda net, x, y: robust_accuracy(net, x * 255, y), "divide by 255"),
    ("start of a fooling image", lambda net, x, y: fooling_image(net, 3, x[:1] * 2),
     "divide by 255"),
    ("NaN pixels", lambda net, x, y: fgsm(net, x * float("nan"), y, 0.1), r"\[0, 1\]"),
    ("channels last", lambda net, x, y: fgsm(net, x.transpose(0, 2, 3, 1), y, 0.1),
     r"looks like \(N, H, W, 3\); transpose with images.transpose\(0, 3, 1, 2\)"),
    ("one image", lambda net, x, y: pgd(net, x[0], y[:1], 0.1),
     r"add a batch axis with image\[None\]"),
    ("target above the classes", lambda net, x, y: fooling_image(net, 10, "noise"),
     "target: class 10 is out of range; valid: 0 to 9"),
    ("targeted PGD", lambda net, x, y: pgd(net, x, [0, 1, 2, 10], 0.1, targeted=True),
     "class 10 is out of range; valid: 0 to 9"),
    ("negative label", lambda net, x, y: carlini_wagner_l2(net, x, [-1, 0, 0, 0]),
     "class -1 is out of range; valid: 0 to 9"),
    ("float labels", lambda net, x, y: fgsm(net, x, y.astype(float), 0.1),
     "class indices must be integers"),
    ("short labels", lambda net, x, y: fgsm(net, x, y[:3], 0.1),
     r"labels: expected one class per image \(4\), received shape \(3,\)"),
    ("long labels", lambda net, x, y: pgd(net, x, np.concatenate([y, y]), 0.1),
     r"one class per image \(4\), received shape \(8,\)"),
    ("labels for CW", lambda net, x, y: carlini_wagner_l2(net, x, y[:2]), "one class per image"),
    ("labels for robustness", lambda net, x, y: robust_accuracy(net, x, y[:2]),
     "one class per image"),
    ("labels for transfer", lambda net, x, y: transfer_matrix([net], [net], x, y[:2]),
     "one class per image"),
    ("targets for the starts", lambda net, x, y: fooling_image(net, [1, 2], x),
     r"target: expected one class per image \(4\)"),
    ("unknown attack", lambda net, x, y: robust_accuracy(net, x, y, "bim"),
     "unknown attack 'bim': use 'fgsm', 'pgd' or a function"),
    ("PGD steps", lambda net, x, y: pgd(net, x, y, 0.1, steps=0), "steps must be at least 1"),
    ("DeepFool steps", lambda net, x, y: deepfool(net, x, steps=0), "need steps >= 1"),
    ("DeepFool candidates", lambda net, x, y: deepfool(net, x, candidates=1),
     "candidates >= 2"),
    ("fooling steps", lambda net, x, y: fooling_image(net, 3, x[:1], max_steps=-1),
     "max_steps must be >= 0"),
    ("confidence", lambda net, x, y: fooling_image(net, 3, x[:1], confidence=1.0),
     "strictly between 0 and 1"),
    ("CW constant", lambda net, x, y: carlini_wagner_l2(net, x, y, c=0), "need c > 0"),
    ("crops", lambda net, x, y: multicrop_predict(net, x, crops=3), "crops must be 1, 5 or a list"),
]


@pytest.mark.parametrize("call, message", [case[1:] for case in BAD_INPUTS],
                         ids=[case[0] for case in BAD_INPUTS])
def test_bad_inputs_say_what_is_wrong(digits, dev, call, message):
    _, images, labels = digits
    net = dev.layer(minicnn.load())
    with pytest.raises(ValueError, match=message):
        call(net, dev.array(images[:4]), labels[:4])


def test_fool_linear_refuses_what_it_cannot_reach():
    with pytest.raises(ValueError, match="strictly between"):
        fool_linear(np.ones(3), 0.0, np.zeros(3), 1.0)
    with pytest.raises(ValueError, match="w has 3 entries but x has 4"):
        fool_linear(np.ones(3), 0.0, np.zeros(4), 0.5)
    with pytest.raises(ValueError, match="w is all zeros"):
        fool_linear(np.zeros(3), 0.0, np.zeros(3), 0.5)


@pytest.mark.parametrize("spec", [None, BGR_SPEC], ids=["digits-spec", "bgr-spec"])
def test_pixel_model_is_the_weights_files_preprocessing(digits, spec, dev):
    from minicnn.images import normalize
    _, images, _ = digits
    net = dev.layer(minicnn.load())
    spec = spec or net.metadata["preprocessing"]
    model = PixelModel(net, spec)
    pixels = np.round(images[:3] * 255).astype(np.uint8).transpose(0, 2, 3, 1)
    expected = np.stack([normalize(p, spec) for p in pixels])
    x = model.to_input(dev.array(pixels.transpose(0, 3, 1, 2) / 255.0))
    np.testing.assert_allclose(dev.numpy(x), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dev.numpy(model.to_images(x)),
                               pixels.transpose(0, 3, 1, 2) / 255.0, atol=1e-6)
