"""Torch twins of the image-optimizing objectives, for the gradient tests of
test_class_model_inversion.py and test_dream_style.py: random-weight networks
with their torch references (float64), features at minicnn's layer names, and
the losses written out in torch."""
import numpy as np
import pytest
import torch

from conftest import GPU_AVAILABLE, NO_GPU_REASON
from minicnn.backend import to_cpu
from minicnn.images import DEFAULT_PREPROCESSING
from test_models import pair

MEAN = torch.tensor(DEFAULT_PREPROCESSING["mean"], dtype=torch.float64).reshape(1, 3, 1, 1)
STD = torch.tensor(DEFAULT_PREPROCESSING["std"], dtype=torch.float64).reshape(1, 3, 1, 1)


def float64_pair(depth, variant, size, seed=0):
    """(minicnn net in float64 with the ImageNet preprocessing of ``size``, torch model)."""
    net, model = pair(depth, variant, seed=seed)
    net.astype(np.float64)
    net.metadata["preprocessing"] = dict(DEFAULT_PREPROCESSING, input_size=[size, size],
                                         resize=None, crop=None)
    return net, model.double()


def torch_features(model, x):
    """minicnn's names -> torch tensors: conv1_relu, res2..res4 (res5) and fc."""
    out = {"conv1_relu": torch.relu(model.bn1(model.conv1(x)))}
    h = model.maxpool(out["conv1_relu"]) if hasattr(model, "maxpool") else out["conv1_relu"]
    for stage in range(1, 5):
        layer = getattr(model, f"layer{stage}", None)
        if layer is None:
            break
        h = layer(h)
        out[f"res{stage + 1}"] = h
    out["fc"] = model.fc(h.mean(dim=(2, 3)))
    return out


def relative_error(ours, reference):
    """max |ours - reference| / max |reference|."""
    reference = np.asarray(reference)
    return float(np.abs(np.asarray(ours) - reference).max() / np.abs(reference).max())


def on_device(net, a):
    """A host array moved to the device ``net`` lives on (NumPy or CuPy)."""
    return net.array_module().asarray(a)


def model_on(request):
    """(net, model, size) of a fixture param (variant, depth, size, device), the net
    in float64 on that device (the CuPy params carry the gpu mark)."""
    variant, depth, size, device = request.param
    if device == "gpu" and not GPU_AVAILABLE:
        pytest.skip(NO_GPU_REASON)
    net, model = float64_pair(depth, variant, size)
    return net.to(device), model, size


MODEL_PARAMS = [
    pytest.param(("cifar", 20, 16, "cpu"), id="cifar_resnet20-numpy"),
    pytest.param(("torchvision", 50, 64, "cpu"), id="resnet50-numpy"),
    pytest.param(("cifar", 20, 16, "gpu"), id="cifar_resnet20-cupy", marks=pytest.mark.gpu),
    pytest.param(("torchvision", 50, 64, "gpu"), id="resnet50-cupy", marks=pytest.mark.gpu),
]
"""The CIFAR ResNet-20 at 16 x 16 and ResNet-50 at 64 x 64 (random weights, float64),
on NumPy and on CuPy."""


def check_against_torch(objective, torch_loss, x):
    """Loss and gradient of ``objective`` at ``x`` (on the objective's device) against
    autograd of ``torch_loss`` at the same values on the host."""
    loss, grad = objective(x)
    xt = torch.tensor(to_cpu(x), requires_grad=True)
    expected = torch_loss(xt)
    expected.backward()
    assert abs(loss - expected.item()) <= 1e-9 * abs(expected.item())
    error = relative_error(to_cpu(grad), xt.grad.numpy())
    assert error < 1e-8, f"gradient differs from autograd by {error:.2e} (relative)"
    return error


def check_numerically(objective, x, seed=0, h=1e-5):
    """Centered difference along a random direction against the analytic slope."""
    direction = np.random.default_rng(seed).standard_normal(x.shape)
    slope = float((objective(x)[1] * direction).sum())
    numeric = (objective(x + h * direction)[0] - objective(x - h * direction)[0]) / (2 * h)
    assert abs(numeric - slope) <= 1e-6 * max(abs(slope), 1e-3), (numeric, slope)


def torch_tv(x, beta=2.0):
    right = x[:, :, :-1, 1:] - x[:, :, :-1, :-1]
    down = x[:, :, 1:, :-1] - x[:, :, :-1, :-1]
    return ((right ** 2 + down ** 2) ** (beta / 2)).sum()


def valid_bound():
    """B = max |valid value| of the ImageNet preprocessing."""
    low, high = -MEAN / STD, (1 - MEAN) / STD
    return float(torch.maximum(low.abs(), high.abs()).max())
