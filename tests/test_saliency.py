"""The saliency family against torch on the same weights.

Oracles, written from the methods' definitions (here and in
tests/torch_saliency.py): autograd for the vanilla gradient, SmoothGrad (the
same noise, redrawn from the documented order), integrated gradients and
Grad-CAM (the layer's output kept with ``retain_grad``); a custom autograd ReLU,
patched in for ``F.relu``, whose backward is the guided rule
``dy [x > 0] [dy > 0]`` or the deconvnet rule ``dy [dy > 0]``. Networks: the
shipped digits ResNet-8 on real digits, a random-weight CIFAR ResNet-20, and
random-weight ImageNet ResNet-50s in the caffe, torchvision and keras variants
at 64 x 64.

Tolerance: every element within 1e-5 (float32) or 1e-9 (float64) of the
reference, relative to the reference's largest value: ``|ours - ref| <= rtol
max|ref|``. An element's own relative error means little where a gradient sums
terms of both signs to nearly zero, and float32 rounding through fifty layers
already reaches about 1e-6 of the largest value in both engines. A ReLU input
within float32 rounding of zero may switch sign between two engines and with it
a whole path of the signal: with the ResNet-50 input seed 6 instead of 9, one
input of the caffe net sits within 1e-7 of zero and moves minicnn's float32
gradient 6e-4 away from float64, torch's 1e-6; with seed 8 a tie moves both
engines' torchvision gradient by 3e-2. The inputs below have no such tie. On
ResNet-50, SmoothGrad and integrated gradients, which add many more points, are
compared in float64 only: they are the one-pass gradient (compared in float32
on ResNet-50) summed, and that sum is compared in float32 on the small networks.
"""
import re

import numpy as np
import pytest

import minicnn
from minicnn.datasets import as_dataset
from minicnn.layers import ShapeError
from minicnn.techniques import (completeness_gap, deconvnet, grad_cam, guided_backprop,
                                guided_grad_cam, integrated_gradients, saliency_map, smoothgrad,
                                upsample, vanilla_gradient)

torch = pytest.importorskip("torch", reason="torch is the oracle: pip install 'minicnn[oracle]'")
import torch.nn.functional as F  # noqa: E402
from test_models import pair  # noqa: E402
from conftest import Device  # noqa: E402
from torch_resnets import TorchCifarResNet, load_minicnn_state  # noqa: E402
from torch_saliency import torch_gradient, torch_integrated_gradients, torch_scores  # noqa: E402

RTOL = {np.float32: 1e-5, np.float64: 1e-9}
SMOOTH = dict(samples=3, noise=0.2, rng=7)
IG_STEPS = 4


def assert_close(ours, ref, rtol):
    """``|ours - ref| <= rtol * max|ref|`` everywhere (see the module's docstring)."""
    ref = ref.detach().numpy() if isinstance(ref, torch.Tensor) else np.asarray(ref)
    scale = np.abs(ref).max()
    assert scale > 0, "the reference is all zeros: the comparison would prove nothing"
    np.testing.assert_allclose(ours, ref, rtol=0, atol=rtol * scale)


# -- the networks, each with its torch twin and a batch -------------------------------------
def digits():
    net = minicnn.load()
    model = load_minicnn_state(TorchCifarResNet(8), net.state_dict(), 8).eval()
    x = as_dataset(None, net).images([0, 1, 2])
    return net, model, x, [3, 0, 7], "res4", model.layer3


def cifar20():
    net, model = pair(20, "cifar", seed=4)
    x = np.random.default_rng(4).standard_normal((2, 3, 32, 32))
    return net, model, x, [2, 9], "res3", model.layer2


def resnet50(variant):
    def build():
        net, model = pair(50, variant, seed=5)
        x = np.random.default_rng(9).standard_normal((2, 3, 64, 64))
        return net, model, x, [3, 981], "res4", model.layer3
    return build


NETWORKS = {"digits": digits, "cifar20": cifar20, "resnet50-caffe": resnet50("caffe"),
            "resnet50-torchvision": resnet50("torchvision"), "resnet50-keras": resnet50("keras")}


class Case:
    """A minicnn network and its torch twin in one dtype, a batch and per-image classes."""

    def __init__(self, name, dtype):
        net, model, x, classes, layer, module = NETWORKS[name]()
        self.net, self.dtype = net.astype(dtype), dtype
        self.model = model.double() if dtype == np.float64 else model.float()
        self.x, self.classes = np.asarray(x, dtype=dtype), classes
        self.layer, self.module = layer, module
        self.rtol = RTOL[dtype]


def cases(many_points=False):
    return [pytest.param((name, dtype), id=f"{name}-{dtype.__name__}") for name in NETWORKS
            for dtype in (np.float32, np.float64)
            if not (many_points and name.startswith("resnet50") and dtype == np.float32)]


@pytest.fixture(scope="module")
def case(request):
    torch.set_num_threads(1)
    return Case(*request.param)


# -- the torch side ---------------------------------------------------------------------------
def torch_grad_cam(case, x):
    kept = {}

    def keep(module, inputs, output):
        output.retain_grad()
        kept["a"] = output
    handle = case.module.register_forward_hook(keep)
    try:
        torch_scores(case.model, torch.tensor(x), case.classes).sum().backward()
    finally:
        handle.remove()
    a = kept["a"]
    alpha = a.grad.mean(dim=(2, 3), keepdim=True)
    return torch.relu((alpha * a).sum(dim=1)).detach()


def smoothgrad_noisy_points(x, samples, noise, rng):
    """The documented noise: sigma_n * standard_normal((samples, N, C, H, W), x's dtype)."""
    e = np.random.default_rng(rng).standard_normal((samples,) + x.shape, dtype=x.dtype)
    flat = x.reshape(len(x), -1)
    sigma = (noise * (flat.max(axis=1) - flat.min(axis=1))).reshape(-1, 1, 1, 1)
    return x + sigma * e


# -- one test per method ----------------------------------------------------------------------
@pytest.mark.parametrize("case", cases(), indirect=True)
@pytest.mark.parametrize("method, mode", [(vanilla_gradient, "normal"),
                                          (guided_backprop, "guided"), (deconvnet, "deconv")])
def test_one_pass_methods_match_torch(case, method, mode):
    got = method(case.net, case.x, case.classes)
    assert got.dtype == case.dtype and got.shape == case.x.shape
    assert_close(got, torch_gradient(case.model, case.x, case.classes, mode), case.rtol)


@pytest.mark.parametrize("case", cases(many_points=True), indirect=True)
def test_smoothgrad_matches_torch_on_the_same_noise(case):
    n = len(case.x)
    # passes of 2 samples and then 1 (the layer-target test below takes other batch sizes)
    got = smoothgrad(case.net, case.x, case.classes, batch_size=2 * n, progress=False, **SMOOTH)
    points = smoothgrad_noisy_points(case.x, **SMOOTH)
    grads = torch_gradient(case.model, points.reshape((-1,) + case.x.shape[1:]),
                           np.tile(case.classes, SMOOTH["samples"]))
    assert_close(got, grads.reshape(points.shape).mean(axis=0), case.rtol)


@pytest.mark.parametrize("case", cases(many_points=True), indirect=True)
def test_integrated_gradients_match_torch(case):
    x, steps = case.x, IG_STEPS
    baseline = np.full_like(x, 0.25)
    got = integrated_gradients(case.net, x, case.classes, baseline=baseline, steps=steps,
                               batch_size=3 * len(x), progress=False)
    expected = torch_integrated_gradients(case.model, x, case.classes, baseline, steps, steps)
    assert_close(got, expected, case.rtol)


@pytest.mark.parametrize("case", cases(), indirect=True)
def test_grad_cam_and_guided_grad_cam_match_torch(case):
    cam = grad_cam(case.net, case.x, case.classes, case.layer)
    expected = torch_grad_cam(case, case.x)
    assert cam.shape == tuple(expected.shape) and cam.shape[0] == len(case.x)
    assert (cam > 0).any()
    assert_close(cam, expected, case.rtol)
    guided = guided_grad_cam(case.net, case.x, case.classes, case.layer)
    size = case.x.shape[2:]
    up = F.interpolate(expected[:, None], size=size, mode="bilinear", align_corners=False)
    reference = torch_gradient(case.model, case.x, case.classes, "guided") * up.numpy()
    assert_close(guided, reference, case.rtol)


# -- targets at layers, with their strongest position found in every copy -------------------
@pytest.fixture(scope="module")
def cifar64():
    return Case("cifar20", np.float64)


def torch_channel_gradient(model, x, channel):
    """d (max over positions of layer2's channel) / d x, per row."""
    xt = torch.tensor(x, requires_grad=True)
    h = model.layer2(model.layer1(F.relu(model.bn1(model.conv1(xt)))))
    h[:, channel].reshape(len(x), -1).max(dim=1).values.sum().backward()
    return xt.grad.numpy()


def test_layer_targets_in_smoothgrad_and_integrated_gradients(cifar64):
    net, model, x = cifar64.net, cifar64.model, cifar64.x
    got = smoothgrad(net, x, "res3:5", batch_size=1, progress=False, **SMOOTH)  # image by image
    points = smoothgrad_noisy_points(x, **SMOOTH)
    grads = torch_channel_gradient(model, points.reshape((-1,) + x.shape[1:]), 5)
    assert_close(got, grads.reshape(points.shape).mean(axis=0), 1e-9)
    got = integrated_gradients(net, x, "res3:5", steps=4, batch_size=3, progress=False)
    path = np.concatenate([(k / 4) * x for k in range(1, 5)])
    expected = x * torch_channel_gradient(model, path, 5).reshape((4,) + x.shape).mean(axis=0)
    assert_close(got, expected, 1e-9)


# -- properties --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def digits64():
    net = minicnn.load().astype(np.float64)
    return net, as_dataset(None, net).images(range(3)).astype(np.float64)


def test_completeness_gap_shrinks_as_steps_grow(digits64):
    net, x = digits64
    classes = [3, 3, 5]
    gaps = [completeness_gap(net, x, classes,
                             integrated_gradients(net, x, classes, steps=m, progress=False))
            for m in (2, 6, 18, 54)]
    means = [float(g.mean()) for g in gaps]
    assert all(later < earlier for earlier, later in zip(means, means[1:])), means
    scores = net.forward(x)[np.arange(3), classes] - net.forward(np.zeros_like(x))[0, classes]
    assert means[-1] < 0.02 * np.abs(scores).mean(), (means, scores)


def test_smoothgrad_seed_and_zero_noise(digits64):
    net, x = digits64
    first = smoothgrad(net, x, 2, samples=3, rng=1, progress=False)
    np.testing.assert_array_equal(first, smoothgrad(net, x, 2, samples=3, rng=1, progress=False))
    assert not np.allclose(first, smoothgrad(net, x, 2, samples=3, rng=2, progress=False))
    quiet = smoothgrad(net, x, 2, samples=3, noise=0.0, progress=False)
    np.testing.assert_allclose(quiet, vanilla_gradient(net, x, 2), rtol=1e-12, atol=1e-15)


def test_saliency_map_is_the_channel_max_of_absolute_values():
    g = np.random.default_rng(0).standard_normal((2, 3, 4, 5))
    expected = np.array([[[max(abs(g[n, c, i, j]) for c in range(3)) for j in range(5)]
                          for i in range(4)] for n in range(2)])
    np.testing.assert_array_equal(saliency_map(g), expected)


@pytest.mark.parametrize("size", [(32, 17), (5, 9), 3])
def test_upsample_matches_torch_bilinear(size):
    maps = np.random.default_rng(1).standard_normal((2, 7, 5))
    expected = F.interpolate(torch.tensor(maps)[:, None], size=size, mode="bilinear",
                             align_corners=False)[:, 0]
    got = upsample(maps, size)
    np.testing.assert_allclose(got, expected.numpy(), rtol=1e-12, atol=1e-14)


# -- bad input ---------------------------------------------------------------------------------
@pytest.mark.parametrize("call, error, message", [
    (lambda net, x: vanilla_gradient(net, x[0, 0], 1), ShapeError, "2-D image"),
    (lambda net, x: guided_backprop(net, x[:, :1], 1), ShapeError, "3-channel"),
    (lambda net, x: smoothgrad(net, x[0], 1, progress=False), ShapeError, r"x\[None\]"),
    (lambda net, x: integrated_gradients(net, x[:, :2], 1, progress=False), ShapeError,
     "3-channel"),
    (lambda net, x: grad_cam(net, x, 1, "res9"), KeyError, "unknown layer name 'res9'"),
    (lambda net, x: deconvnet(net, x, "res9:0"), KeyError, "unknown layer name 'res9'"),
    (lambda net, x: grad_cam(net, x, 1, "fc"), ValueError, "spatial maps"),
    (lambda net, x: vanilla_gradient(net, x, 10), ValueError, "valid: 0 to 9"),
    (lambda net, x: integrated_gradients(net, x, 1, baseline=np.zeros((3, 8, 8)),
                                         progress=False), ValueError, "baseline of shape"),
    (lambda net, x: integrated_gradients(net, x, 1, steps=0, progress=False), ValueError,
     "at least 1"),
    (lambda net, x: smoothgrad(net, x, 1, batch_size=0, progress=False), ValueError,
     "batch_size"),
    (lambda net, x: smoothgrad(net, x, 1, noise=-0.1, progress=False), ValueError,
     "at least 0"),
    (lambda net, x: saliency_map(x[0]), ValueError, r"g\[None\]"),
    (lambda net, x: upsample(x, 8), ValueError, r"\(N, h, w\)"),
])
def test_bad_input_names_the_problem(digits64, call, error, message):
    net, x = digits64
    with pytest.raises(error, match=message):
        call(net, x[:2])


# -- the GPU: every method on CuPy equals NumPy (skipped without a CUDA device) ---------------
METHODS = {
    "vanilla": lambda net, x: vanilla_gradient(net, x, [1, 4]),
    "guided": lambda net, x: guided_backprop(net, x, "res3:2"),
    "deconv": lambda net, x: deconvnet(net, x, "res3:2:4:5"),
    "smoothgrad": lambda net, x: smoothgrad(net, x, [1, 4], samples=3, batch_size=4,
                                            progress=False),
    "integrated-gradients": lambda net, x: integrated_gradients(net, x, [1, 4], steps=5,
                                                                batch_size=4, progress=False),
    "grad-cam": lambda net, x: grad_cam(net, x, [1, 4], "res4"),
    "guided-grad-cam": lambda net, x: guided_grad_cam(net, x, [1, 4], "res4"),
}


@pytest.mark.gpu
@pytest.mark.parametrize("method", METHODS)
def test_gpu_matches_numpy(digits64, method):
    net, x = digits64
    x = x[:2]
    expected = METHODS[method](net, x)
    gpu = Device("gpu")
    try:
        got = METHODS[method](gpu.layer(net), gpu.array(x))
    finally:
        net.to("cpu")  # the network is shared with the other tests of this module
    assert type(got).__module__.split(".")[0] == "cupy"
    np.testing.assert_allclose(gpu.numpy(got), expected, rtol=1e-9,
                               atol=1e-12 * np.abs(expected).max())


# -- the command and the gallery section ---------------------------------------------------
def test_saliency_command_writes_the_figure(tmp_path, capsys):
    from minicnn.cli import main
    out = tmp_path / "s.png"
    assert main(["saliency", "--method", "vanilla,grad-cam", "--method", "guided",
                 "--limit", "2", "--out", str(out)]) == 0
    assert out.read_bytes()[:4] == b"\x89PNG"
    assert f"wrote {out}" in capsys.readouterr().out
    assert main(["saliency", "--method", "vanila", "--limit", "1",
                 "--out", str(tmp_path / "bad.png")]) == 2
    assert "unknown saliency method 'vanila'" in capsys.readouterr().err
    assert main(["saliency", "--method", "grad-cam", "--target", "res3:4", "--limit", "1",
                 "--out", str(tmp_path / "late.png")]) == 2
    assert "comes after the target's own layer" in capsys.readouterr().err
    assert not (tmp_path / "bad.png").exists() and not (tmp_path / "late.png").exists()


def test_gallery_section_writes_both_figures_with_measured_captions(tmp_path):
    from minicnn.cli import saliency
    from minicnn.gallery import GalleryContext
    net = minicnn.load()
    context = GalleryContext(net, as_dataset(None, net).subset([0, 1]), tmp_path)
    saliency.gallery(context)
    names = [entry[1] for entry in context.entries]
    assert names == ["saliency.png", "saliency_completeness.png"]
    assert all((tmp_path / name).read_bytes()[:4] == b"\x89PNG" for name in names)
    caption = context.entries[1][3]
    first, last = (float(v) for v in re.findall(r"(\S+) at \d+ steps", caption))
    assert last < first  # the gap shrinks from 2 to 64 steps, as the figure shows


def test_saliency_command_names_a_target_beyond_the_predicted_classes(tmp_path, monkeypatch):
    """A network without labels, asked for a class that no shown image is predicted as:
    the titles name it from the network's classes, not from the predictions seen."""
    from minicnn.cli import common, main
    net = minicnn.load()
    del net.metadata["labels"]
    monkeypatch.setattr(common, "load_model", lambda args: net)
    data = common.load_data(type("Args", (), {"data": None, "limit": 1, "batch_size": 64})(), net)
    assert int(net.forward(data.images([0])).argmax()) < 9
    out = tmp_path / "s.png"
    assert main(["saliency", "--method", "vanilla", "--target", "9", "--limit", "1",
                 "--out", str(out)]) == 0
    assert out.read_bytes()[:4] == b"\x89PNG"
