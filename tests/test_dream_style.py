"""DeepDream and neural style: every objective's gradient against torch autograd
(CIFAR ResNet-20 and ResNet-50, random weights, float64) and centered differences;
one make_step against the same step written in torch; reproducibility; bad input;
and the real CIFAR ResNet-56 lowering the style loss by at least 90 % for each
statistic. The network tests run on NumPy and, under the gpu marker, on CuPy."""
import warnings
from pathlib import Path

import numpy as np
import pytest

from minicnn.techniques import (content_loss, dream, dream_objective, gram_matrix, make_step,
                                style_loss, style_objective, style_statistic, style_transfer)
from minicnn.techniques.optimize import valid_range

torch = pytest.importorskip("torch", reason="torch is the oracle: pip install 'minicnn[oracle]'")
from conftest import GPU_AVAILABLE, NO_GPU_REASON, xp_params  # noqa: E402
from minicnn.backend import to_cpu  # noqa: E402
from optimize_oracle import (MODEL_PARAMS, check_against_torch, check_numerically,  # noqa: E402
                             float64_pair, model_on, on_device, torch_features, torch_tv)

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10"
CHECKPOINT = DATA / "resnet56-4bfd9763.th"


@pytest.fixture(scope="module", params=MODEL_PARAMS)
def model_pair(request):
    """(net on NumPy or CuPy, torch model, host images: x (2), and three single images)."""
    net, model, size = model_on(request)
    rng = np.random.default_rng(1)
    images = [0.5 * rng.standard_normal((n, 3, size, size)) for n in (2, 1, 1, 1)]
    return net, model, images


def torch_statistic(features, statistic):
    n, c = features.shape[:2]
    flat = features.reshape(n, c, -1)
    if statistic == "gram":
        return flat @ flat.transpose(1, 2)
    mean = flat.mean(dim=2)
    if statistic == "mean":
        return mean
    return torch.stack([mean, torch.sqrt(flat.var(dim=2, unbiased=False) + 1e-5)], dim=1)


def torch_style_loss(features, target, statistic):
    c, m = features.shape[1], features.shape[2] * features.shape[3]
    squared = ((torch_statistic(features, statistic) - target) ** 2).sum()
    return squared / (4 * c * c * m * m) if statistic == "gram" else squared / c


@pytest.mark.parametrize("statistic", ["gram", "mean", "mean_std"])
def test_style_objective_matches_autograd(model_pair, statistic):
    net, model, (x, content, style_a, style_b) = model_pair
    layers = {"conv1_relu": 0.2, "res2": 0.5, "res3": 0.3}
    objective = style_objective(net, on_device(net, np.concatenate([content, style_b])),
                                [on_device(net, style_a), on_device(net, style_b)], "res3",
                                layers, content_weight=0.7, style_weight=50.0, tv_weight=0.01,
                                statistic=statistic, style_blend=[3, 1])
    with torch.no_grad():
        content_code = torch_features(model, torch.tensor(np.concatenate([content, style_b])))
        targets = {name: 0.75 * torch_statistic(torch_features(model, torch.tensor(style_a))[name],
                                                statistic)
                   + 0.25 * torch_statistic(torch_features(model, torch.tensor(style_b))[name],
                                            statistic) for name in layers}

    def reference(xt):
        features = torch_features(model, xt)
        total = 0.7 * 0.5 * ((features["res3"] - content_code["res3"]) ** 2).sum()
        for name, weight in layers.items():
            total = total + 50.0 * weight * torch_style_loss(features[name], targets[name],
                                                             statistic)
        return total + 0.01 * torch_tv(xt)
    check_against_torch(objective, reference, on_device(net, x))


@pytest.mark.parametrize("guided", [False, True], ids=["l2", "guided"])
def test_dream_objective_matches_autograd(model_pair, guided):
    net, model, (x, guide, _, _) = model_pair
    objective = dream_objective(net, "res3", on_device(net, guide) if guided else None)
    with torch.no_grad():
        guide_code = torch_features(model, torch.tensor(guide))["res3"]
        guide_features = guide_code.reshape(guide_code.shape[1], -1)  # (C, M')

    def reference(xt):
        a = torch_features(model, xt)["res3"]
        if not guided:
            return -0.5 * (a ** 2).sum()
        flat = a.reshape(a.shape[0], a.shape[1], -1)
        return -(flat.transpose(1, 2) @ guide_features).max(dim=2).values.sum()
    check_against_torch(objective, reference, on_device(net, x))


def test_make_step_equals_the_step_written_in_torch(model_pair):
    net, model, (x, _, _, _) = model_pair
    ours = to_cpu(make_step(net, on_device(net, x), "res3", step_size=1.5, shift=(3, -5)))
    low, high = (torch.tensor(to_cpu(b)) for b in valid_range(net, on_device(net, x)))
    rolled = torch.roll(torch.tensor(x), shifts=(3, -5), dims=(2, 3)).requires_grad_(True)
    (0.5 * (torch_features(model, rolled)["res3"] ** 2).sum()).backward()
    g = rolled.grad
    levels = (high - low) / 255  # step_size counts pixel levels of 0..255
    stepped = rolled.detach() + 1.5 * levels / g.abs().mean() * g
    expected = torch.minimum(torch.maximum(torch.roll(stepped, (-3, 5), (2, 3)), low), high)
    np.testing.assert_allclose(ours, expected.numpy(), rtol=1e-10, atol=1e-12)


def test_losses_and_statistics_against_their_definitions(dev):
    rng = np.random.default_rng(7)
    features, target = rng.standard_normal((2, 4, 3, 5)), rng.standard_normal((2, 4, 3, 5))
    np.testing.assert_allclose(dev.numpy(gram_matrix(dev.array(features)))[1],
                               features[1].reshape(4, -1) @ features[1].reshape(4, -1).T)
    loss, grad = content_loss(dev.array(features), dev.array(target))
    assert loss == pytest.approx(0.5 * ((features - target) ** 2).sum())
    np.testing.assert_allclose(dev.numpy(grad), features - target)
    for statistic in ("gram", "mean", "mean_std"):
        stat = style_statistic(dev.array(target), statistic)
        loss, grad = style_loss(dev.array(features), stat, statistic)
        ft = torch.tensor(features, requires_grad=True)
        expected = torch_style_loss(ft, torch.tensor(dev.numpy(stat)), statistic)
        expected.backward()
        assert loss == pytest.approx(expected.item(), rel=1e-12)
        np.testing.assert_allclose(dev.numpy(grad), ft.grad.numpy(), rtol=1e-9, atol=1e-13)


def test_objectives_match_centered_differences_on_a_tiny_image():
    net, _ = float64_pair(8, "cifar", 8, seed=4)
    rng = np.random.default_rng(5)
    x, content, style = (0.5 * rng.standard_normal((1, 3, 8, 8)) for _ in range(3))
    check_numerically(dream_objective(net, "res2"), x)
    check_numerically(dream_objective(net, "res3", guide=style), x)
    for statistic in ("gram", "mean", "mean_std"):
        check_numerically(style_objective(net, content, style, "res3", ["conv1_relu", "res2"],
                                          style_weight=20.0, tv_weight=0.1,
                                          statistic=statistic), x)


def test_dream_and_style_are_reproducible_and_keep_the_valid_range():
    net, _ = float64_pair(8, "cifar", 16, seed=1)
    image = 0.5 * np.random.default_rng(2).standard_normal((1, 3, 16, 16))
    runs = [dream(net, image, "res3", octaves=2, steps=2, jitter=4, rng=seed,
                  progress=False) for seed in (1, 1, 2)]
    np.testing.assert_array_equal(runs[0][0], runs[1][0])
    assert not np.array_equal(runs[0][0], runs[2][0])
    assert runs[0][0].shape == image.shape and len(runs[0][1]) == 4
    low, high = valid_range(net, image)
    assert np.all(runs[0][0] >= low) and np.all(runs[0][0] <= high)
    styles = [style_transfer(net, image, image[:, :, ::-1], "res3", ["res2"], steps=3,
                             init="noise", rng=3, progress=False)[0] for _ in range(2)]
    np.testing.assert_array_equal(*styles)


def test_preserved_colors_keep_the_contents_chroma():
    net, _ = float64_pair(8, "cifar", 16, seed=1)
    rng = np.random.default_rng(3)
    content, style = (0.5 * rng.standard_normal((1, 3, 16, 16)) for _ in range(2))
    x, _ = style_transfer(net, content, style, "res3", ["res2"], steps=5, preserve_colors=True,
                          progress=False)
    from minicnn.techniques.style import YIQ, _to_rgb
    spec = net.metadata["preprocessing"]

    def chroma(image):
        return np.einsum("ij,njhw->nihw", YIQ, _to_rgb(image, spec))[:, 1:]
    inside = (x > valid_range(net, x)[0] + 1e-9) & (x < valid_range(net, x)[1] - 1e-9)
    mask = inside.all(axis=1, keepdims=True)[:, [0, 0]]
    np.testing.assert_allclose(chroma(x)[mask], chroma(content)[mask], atol=1e-9)


def test_bad_input_is_refused_or_said():
    net, _ = float64_pair(8, "cifar", 16)
    content = np.zeros((1, 3, 16, 16))
    with pytest.warns(UserWarning, match=r"style image of size \(12, 20\) resized"):
        x, _ = style_transfer(net, content, np.zeros((1, 3, 12, 20)), "res3", ["res2"], steps=1,
                              progress=False)
    assert x.shape == content.shape
    with pytest.raises(ValueError, match="unknown statistic 'median'"):
        style_transfer(net, content, content, "res3", ["res2"], statistic="median")
    with pytest.raises(ValueError, match="unknown init 'white'"):
        style_transfer(net, content, content, "res3", ["res2"], init="white")
    with pytest.raises(KeyError, match="unknown layer name 'res2x'"):
        style_transfer(net, content, content, "res3", ["res2x"])
    with pytest.raises(KeyError, match="unknown layer name"):
        dream(net, content, "conv9")
    with pytest.raises(ValueError, match="steps must be a positive"):
        style_transfer(net, content, content, "res3", ["res2"], steps=0)
    with pytest.raises(ValueError, match="steps must be a positive"):
        dream(net, content, "res3", steps=0)
    with pytest.raises(ValueError, match="octave_scale"):
        dream(net, content, "res3", octave_scale=0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # same size: no warning
        style_transfer(net, content, content, "res3", ["res2"], steps=1, progress=False)


def test_dream_and_style_on_the_device(dev):
    net, _ = float64_pair(8, "cifar", 16, seed=2)
    image = 0.5 * np.random.default_rng(4).standard_normal((1, 3, 16, 16))
    expected_dream = dream(net, image, "res3", octaves=2, steps=2, jitter=3, progress=False)[0]
    expected_style = style_transfer(net, image, image[:, :, ::-1], "res3", ["res2"], steps=3,
                                    statistic="mean_std", progress=False)[0]
    dev.layer(net)
    x = dev.array(image)
    ours = dream(net, x, "res3", octaves=2, steps=2, jitter=3, progress=False)[0]
    np.testing.assert_allclose(dev.numpy(ours), expected_dream, rtol=1e-8, atol=1e-9)
    again = dream(net, x, "res3", octaves=2, steps=2, jitter=3, progress=False)[0]
    np.testing.assert_array_equal(dev.numpy(again), dev.numpy(ours))  # bit for bit there too
    styled = style_transfer(net, x, x[:, :, ::-1], "res3", ["res2"], steps=3,
                            statistic="mean_std", progress=False)[0]
    np.testing.assert_allclose(dev.numpy(styled), expected_style, rtol=1e-6, atol=1e-7)


@pytest.fixture(scope="module", params=xp_params)
def resnet56(request, cifar_resnet_file):
    if not CHECKPOINT.is_file() or not (DATA / "test").is_dir():
        pytest.skip(f"real CIFAR-10 ResNet-56 or test images not found at {DATA}")
    if request.param == "gpu" and not GPU_AVAILABLE:
        pytest.skip(NO_GPU_REASON)
    from minicnn.io.model_file import load
    return load(cifar_resnet_file(56)).to(request.param)


def _photo(net, name, index):
    from minicnn.images import load_image, preprocess
    path = sorted((DATA / "test" / name).glob("*.jpg"))[index]
    return on_device(net, preprocess(load_image(path), net.metadata["preprocessing"])[None])


@pytest.mark.parametrize("statistic", ["gram", "mean", "mean_std"])
def test_resnet56_style_transfer_lowers_the_style_loss_by_90_percent(resnet56, statistic):
    content, style = _photo(resnet56, "cat", 0), _photo(resnet56, "frog", 3)
    x, history = style_transfer(resnet56, content, style, statistic=statistic, steps=60,
                                progress=False)
    measure = style_objective(resnet56, content, style, content_weight=0.0, style_weight=1.0,
                              statistic=statistic)
    before, after = measure(content)[0], measure(x)[0]
    assert after <= 0.1 * before, (before, after)
    assert history.loss[-1] < history.loss[0]


# -- the commands and the gallery section ----------------------------------------------------
def test_commands_write_their_figures(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MINICNN_HOME", str(tmp_path))  # no downloaded VGG-19 here
    from PIL import Image
    from minicnn.cli import main
    from minicnn.datasets import as_dataset
    import minicnn
    data = as_dataset(None, minicnn.load())
    paths = []
    for i in (0, 1):
        paths.append(str(tmp_path / f"digit{i}.png"))
        Image.fromarray(data.pixels(i)).save(paths[-1])
    runs = {"cm.png": ["class-model", "--steps", "3", "--target", "1,7"],
            "fv.png": ["class-model", "--steps", "2", "--layer", "res3", "--channels", "2"],
            "inv.png": ["invert", paths[0], "--steps", "5", "--layer", "res2"],
            "dream.png": ["dream", "--steps", "2", "--layer", "res3", "--size", "40"],
            "style.png": ["style", paths[0], paths[1], "--steps", "3", "--statistic",
                          "gram,mean_std"]}
    for name, argv in runs.items():
        out = tmp_path / name
        assert main([*argv, "--out", str(out)]) == 0, name
        assert out.read_bytes()[:4] == b"\x89PNG"
        assert f"wrote {out}" in capsys.readouterr().out
    assert main(["invert", paths[0], "--steps", "0", "--out", str(tmp_path / "bad.png")]) == 2
    assert "steps must be a positive integer" in capsys.readouterr().err
    assert main(["dream", "--layer", "res7", "--out", str(tmp_path / "bad.png")]) == 2
    assert "unknown layer name 'res7'" in capsys.readouterr().err
    assert not (tmp_path / "bad.png").exists()


def test_invert_compares_the_optimizers(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MINICNN_HOME", str(tmp_path))  # no downloaded VGG-19 here
    import re
    import minicnn
    from minicnn.cli import main
    from minicnn.datasets import as_dataset
    from minicnn.techniques import compare_optimizers
    out = tmp_path / "cmp.png"
    assert main(["invert", "--compare-optimizers", "--steps", "12", "--layer", "res2",
                 "--out", str(out)]) == 0
    assert out.read_bytes()[:4] == b"\x89PNG"
    lines = capsys.readouterr().out
    printed = {name: float(v) for name, v in
               re.findall(r"(lbfgs|gradient|adam) +final loss ([0-9.e-]+)", lines)}
    net = minicnn.load()
    results = compare_optimizers(net, as_dataset(None, net).images([0]), "res2", evaluations=12,
                                 progress=False)
    assert printed == pytest.approx({k: r[1].loss[-1] for k, r in results.items()}, rel=1e-4)
    assert printed["lbfgs"] < min(printed["gradient"], printed["adam"])


def test_gallery_section_writes_every_figure_with_measured_captions(tmp_path):
    import re
    import minicnn
    from minicnn.cli import optimize
    from minicnn.datasets import as_dataset
    from minicnn.gallery import GalleryContext
    net = minicnn.load()
    context = GalleryContext(net, as_dataset(None, net).subset([0, 1]), tmp_path)
    optimize.gallery(context)
    names = [entry[1] for entry in context.entries]
    assert names == ["class_models.png", "feature_visualization.png", "inversion.png",
                     "inversion_optimizers.png", "dream.png", "style.png"]
    assert all((tmp_path / name).read_bytes()[:4] == b"\x89PNG" for name in names)
    lowest = float(re.search(r"softmax is at least ([0-9.]+)", context.entries[0][3]).group(1))
    assert lowest >= 0.99  # each digit's class model convinces the digits model
    driven = re.search(r"drives its channel to ([0-9.]+)-", context.entries[1][3]).group(1)
    assert float(driven) > 1  # each unit's image beats the data's strongest activation
    finals = dict(re.findall(r"(lbfgs|gradient|adam) ([0-9.e-]+\d)", context.entries[3][3]))
    assert float(finals["lbfgs"]) < min(float(finals["gradient"]), float(finals["adam"]))


def test_style_and_inversion_default_to_a_downloaded_vgg19(tmp_path, capsys, monkeypatch):
    import minicnn
    from minicnn.cli import optimize
    from minicnn.io import model_file
    from minicnn.techniques.style import default_layers
    fake = tmp_path / "torchvision_vgg19.h5"
    fake.write_bytes(b"")
    monkeypatch.setenv("MINICNN_HOME", str(tmp_path))
    loaded = []
    monkeypatch.setattr(model_file, "load", lambda path=None: loaded.append(path) or "vgg19")
    args = type("Args", (), {"weights": None})()
    assert optimize.load_model_or_vgg19(args) == "vgg19" and loaded == [fake]
    assert f"using VGG-19 from {fake}" in capsys.readouterr().out
    fake.unlink()
    monkeypatch.undo()
    monkeypatch.setenv("MINICNN_HOME", str(tmp_path))
    assert optimize.load_model_or_vgg19(args).metadata["arch"] == minicnn.load().metadata["arch"]

    class VggNames:  # what default_layers reads of a VGG-19: its names
        aliases = {}

        def names(self):
            return [f"{kind}{block}_{i}" for block in range(1, 6) for i in range(1, 5)
                    for kind in ("conv", "relu")]
    assert default_layers(VggNames()) == ("relu4_2", ["relu1_1", "relu2_1", "relu3_1",
                                                      "relu4_1", "relu5_1"])
