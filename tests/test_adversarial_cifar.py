"""Adversarial examples on the real akamaster CIFAR-10 ResNet-20 and real test JPEGs.

Needs ../shared/data (see its README); skipped with a reason when absent. The
checkpoint is converted with minicnn; PyTorch reads the same checkpoint itself,
so the torch side does not depend on the converter. The full measurements
(1,000 images, every class, all four ResNets) are in demos/adversarial_cifar.py.
"""
from pathlib import Path

import numpy as np
import pytest

from minicnn.images import load_image
from minicnn.io.model_file import load
from minicnn.techniques.adversarial import (fgsm, pgd, fooling_image, deepfool, carlini_wagner_l2,
                                            predict_classes, images_from_pixels, PixelModel)
from test_adversarial import torch_pgd

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10"
pytestmark = pytest.mark.skipif(not (DATA / "test").is_dir(),
                                reason=f"real CIFAR-10 data not found at {DATA}")
CHECKPOINT = "resnet20-12fca82f.th"


@pytest.fixture(scope="module")
def resnet20(cifar_resnet_file):
    return cifar_resnet_file(20)


@pytest.fixture(scope="module")
def cifar_images():
    """The first test JPEG of each class, as images in [0, 1], and their labels."""
    classes = sorted(p.name for p in (DATA / "test").iterdir() if p.is_dir())
    paths = [sorted((DATA / "test" / name).glob("*.jpg"))[0] for name in classes]
    return images_from_pixels(np.stack([load_image(p) for p in paths])), np.arange(len(classes))


def test_fgsm_and_pgd_equal_torch_on_the_real_checkpoint(resnet20, cifar_images, dev):
    torch = pytest.importorskip("torch")
    from torch_resnets import TorchCifarResNet
    net = dev.layer(load(resnet20).astype(np.float64))
    images, labels = cifar_images[0][:4].astype(np.float64), cifar_images[1][:4]
    raw = torch.load(DATA / CHECKPOINT, map_location="cpu", weights_only=True)["state_dict"]
    model = TorchCifarResNet(20)
    model.load_state_dict({k.removeprefix("module.").replace("linear.", "fc."): v
                           for k, v in raw.items()})
    model = model.double().eval()
    spec = net.metadata["preprocessing"]
    eps = 8 / 255
    ours = dev.numpy(fgsm(net, dev.array(images), labels, eps))
    np.testing.assert_array_equal(ours, torch_pgd(model, spec, images, labels, eps, eps, 1))
    ours = dev.numpy(pgd(net, dev.array(images), labels, eps, alpha=2 / 255, steps=3,
                         random_start=False))
    np.testing.assert_array_equal(ours, torch_pgd(model, spec, images, labels, eps, 2 / 255, 3))
    assert np.abs(ours - images).max() <= eps + 1e-15 and 0 <= ours.min() and ours.max() <= 1


def test_every_kind_of_fooling_reaches_the_confidence(resnet20, cifar_images, dev):
    net = dev.layer(load(resnet20))
    images, labels = cifar_images
    fooled, info = fooling_image(net, [3, 8], "noise", rng=0)
    assert info["reached"].all()
    probs = dev.numpy(PixelModel(net).probabilities(fooled))
    assert probs[0, 3] >= 0.996 and probs[1, 8] >= 0.996
    # a real airplane pushed to "frog": a change of a few grey levels
    fooled, info = fooling_image(net, 6, dev.array(images[:1]))
    assert info["reached"][0] and float(PixelModel(net).probabilities(fooled)[0, 6]) >= 0.996
    assert info["linf"][0] <= 16 / 255


def test_deepfool_and_cw_succeed_on_correct_images(resnet20, cifar_images, dev):
    net = dev.layer(load(resnet20))
    images, labels = cifar_images
    right = predict_classes(net, images[:5]) == labels[:5]
    x, y = dev.array(images[:5][right]), labels[:5][right]
    assert len(x) >= 3
    adversarial, info = deepfool(net, x)
    assert info["success"].all() and (predict_classes(net, adversarial) != y).all()
    # DeepFool finds small changes: L2 below 1 over 3,072 pixel values in [0, 1]
    assert np.median(info["l2"]) < 1.0
    adversarial, info = carlini_wagner_l2(net, x, y, c=1.0, steps=30, lr=0.005)
    assert info["success"].all() and (predict_classes(net, adversarial) != y).all()

