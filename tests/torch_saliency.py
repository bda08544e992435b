"""The saliency family in torch, written from the methods' definitions: the test
oracle (tests/test_saliency.py) and the benchmark's reference (tests/benchmark.py).

The hand-written torch ResNets (tests/torch_resnets.py) call ``F.relu``;
:func:`torch_relu_rule` swaps in a custom autograd ReLU whose backward is the
guided rule ``dy [x > 0] [dy > 0]`` or the deconvnet rule ``dy [dy > 0]``.
Test helper only; minicnn never imports torch.
"""
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F


class RuleReLU(torch.autograd.Function):
    """max(x, 0) forward; backward ``dy [dy > 0]``, times ``[x > 0]`` when guided."""

    @staticmethod
    def forward(ctx, x, guided):
        ctx.save_for_backward(x)
        ctx.guided = guided
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx, dy):
        x, = ctx.saved_tensors
        dx = dy * (dy > 0)
        return (dx * (x > 0) if ctx.guided else dx), None


@contextmanager
def torch_relu_rule(mode):
    """Run a block with F.relu's backward replaced by the guided or deconv rule."""
    if mode == "normal":
        yield
        return
    original = F.relu
    F.relu = lambda x, inplace=False: RuleReLU.apply(x, mode == "guided")
    try:
        yield
    finally:
        F.relu = original


def torch_scores(model, x, classes):
    """The class score ``classes[n]`` of every row n of the tensor x."""
    return model(x)[torch.arange(x.shape[0]), torch.as_tensor(classes)]


def torch_gradient(model, x, classes, mode="normal"):
    """d score / d x for every row of x (NumPy in, NumPy out), by autograd."""
    xt = torch.tensor(x, requires_grad=True)
    with torch_relu_rule(mode):
        torch_scores(model, xt, classes).sum().backward()
    return xt.grad.numpy()


def torch_integrated_gradients(model, x, classes, baseline, steps, steps_per_pass):
    """``(x - x') (1/m) sum_{k=1..m} grad(x' + (k/m)(x - x'))``, ``steps_per_pass``
    path points of every image per autograd pass."""
    xt, start = torch.as_tensor(x), torch.as_tensor(baseline)
    total = torch.zeros_like(xt)
    for k0 in range(0, steps, steps_per_pass):
        k1 = min(steps, k0 + steps_per_pass)
        alphas = (torch.arange(k0 + 1, k1 + 1, dtype=xt.dtype) / steps).reshape(-1, 1, 1, 1, 1)
        points = (start + alphas * (xt - start)).reshape((-1,) + tuple(xt.shape[1:]))
        points.requires_grad_(True)
        torch_scores(model, points, np.tile(classes, k1 - k0)).sum().backward()
        total += points.grad.reshape((k1 - k0,) + tuple(xt.shape)).sum(dim=0)
    return (xt - start) * total / steps
