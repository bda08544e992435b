"""Foreign weights files, written here in each real layout, converted and run.

For every layout a torch reference network with random weights (non-trivial
batch-norm statistics and biases) is saved the way the real files are: a
Keras 1 HDF5 with Caffe names, a keras_applications HDF5, a torchvision zip,
legacy pickles with ``module.`` prefixes and a ``state_dict`` wrapper, and a
Caffe NetParameter. ``minicnn.io.convert`` turns the file into minicnn's format
with the architecture and variant inferred, ``minicnn.load`` reads it back, and
its logits must match the torch reference's within 1e-4 relative in float32.
The file layouts come from tests/foreign_files.py, written independently of
minicnn.io.mapping and minicnn.io.resnet_names.
"""
import hashlib

import h5py
import numpy as np
import pytest

import minicnn
from foreign_files import caffe_layout, keras1_layout, keras_layout, write_caffemodel, \
    write_keras_layers
from minicnn.io.convert import PREPROCESSING, convert

torch = pytest.importorskip("torch", reason="torch is the oracle: pip install 'minicnn[oracle]'")
from torch_resnets import (TorchCifarResNet, TorchResNet, assert_close,  # noqa: E402
                           randomize_torch)

# layout -> the variant the file's weights were trained in, which the converter must pick
VARIANT = {"keras1": "caffe", "keras": "keras", "caffemodel": "caffe",
           "torchvision-zip": "torchvision", "torchvision-legacy": "torchvision"}


@pytest.fixture(autouse=True)
def no_label_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MINICNN_HOME", str(tmp_path / "home"))  # no ImageNet labels found


def numpy_state(model):
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


def write(layout, model, depth, path):
    """Save ``model``'s weights as a file of ``layout`` at ``path``."""
    state = numpy_state(model)
    if layout == "keras1":
        with h5py.File(path, "w") as f:
            write_keras_layers(f, keras1_layout(state, depth), "keras1")
    elif layout == "keras":
        with h5py.File(path, "w") as f:
            write_keras_layers(f, keras_layout(state, depth), "keras2")
    elif layout == "caffemodel":
        with torch.no_grad():  # as in the released ResNet-50: only conv1 has a bias
            for name, module in model.named_modules():
                if isinstance(module, torch.nn.Conv2d) and name != "conv1":
                    module.bias.zero_()
        write_caffemodel(path, caffe_layout(numpy_state(model), depth, factor=999.98))
    elif layout == "torchvision-zip":
        torch.save(model.state_dict(), path)
    else:  # an old training script's checkpoint: DataParallel names in a wrapper
        state = model.state_dict()
        if layout == "cifar-legacy":  # akamaster calls the classifier 'linear'
            state = {k.replace("fc.", "linear.", 1) if k.startswith("fc.") else k: v
                     for k, v in state.items()}
        wrapped = {"epoch": 90, "best_prec1": 76.1,
                   "state_dict": {f"module.{k}": v for k, v in state.items()}}
        torch.save(wrapped, path, _use_new_zipfile_serialization=False)


def convert_and_compare(model, path, tmp_path, arch, variant, size):
    out = tmp_path / "converted.h5"
    metadata = convert(path, out)
    assert (metadata["arch"], metadata["variant"]) == (arch, variant)
    assert metadata["preprocessing"] == PREPROCESSING[variant]
    # independently of that table: Caffe and Keras ImageNet weights take BGR, mean-subtracted
    # 0-255 pixels; torchvision and the CIFAR nets RGB in 0-1 divided by the ImageNet std
    bgr = variant in ("caffe", "keras")
    assert metadata["preprocessing"]["color"] == ("BGR" if bgr else "RGB")
    assert metadata["preprocessing"]["scale"] == (1.0 if bgr else 1 / 255)
    assert metadata["source"]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    net = minicnn.load(out)
    assert not any(layer.training for layer in net.layers())  # ready to run: eval mode
    assert net.metadata["arch"] == arch
    x = np.random.default_rng(1).standard_normal((2, 3, size, size)).astype(np.float32)
    logits = net.forward(x)
    with torch.no_grad():
        reference = model(torch.from_numpy(x)).numpy()
    assert logits.dtype == np.float32 and logits.shape == reference.shape
    assert 0.3 < np.abs(reference).max() < 100  # random weights, but O(1) logits
    assert_close(logits, reference)
    return net


@pytest.mark.parametrize("layout", list(VARIANT))
@pytest.mark.parametrize("depth", [50, 18])
def test_imagenet_resnet_files(tmp_path, layout, depth):
    variant = VARIANT[layout]
    model = randomize_torch(TorchResNet(depth, variant), seed=depth)
    path = tmp_path / f"source.{layout}"
    write(layout, model, depth, path)
    # 112 x 112 keeps the test quick and still separates the variants: the
    # Caffe pool1 (no padding, ceil mode) gives 28 x 28, the others 28 x 28 from
    # a padded window grid shifted by one pixel.
    net = convert_and_compare(model, path, tmp_path, f"resnet{depth}", variant, 112)
    assert net.forward(np.zeros((1, 3, 112, 112), np.float32), stop_at="pool1").shape == \
        (1, 64, 28, 28)


def test_resnet101_caffemodel(tmp_path):
    """The Caffe names of ResNet-101/152 number the blocks: res3b1..res3b3, res4b1..res4b22."""
    model = randomize_torch(TorchResNet(101, "caffe"), seed=101)
    path = tmp_path / "ResNet-101-model.caffemodel"
    write("caffemodel", model, 101, path)
    net = convert_and_compare(model, path, tmp_path, "resnet101", "caffe", 64)
    assert "res4b22.branch2c" in net.names() and "res4c" not in net.names()


def test_legacy_cifar_checkpoint(tmp_path):
    model = randomize_torch(TorchCifarResNet(20), seed=20)
    path = tmp_path / "resnet20.th"
    write("cifar-legacy", model, 20, path)
    net = convert_and_compare(model, path, tmp_path, "cifar_resnet20", "cifar", 32)
    assert net.metadata["labels"][:2] == ["airplane", "automobile"]


def test_keras_classifier_may_be_named_predictions(tmp_path):
    """tf.keras names the classifier 'predictions', keras_applications 'probs'."""
    model = randomize_torch(TorchResNet(18, "keras"), seed=3)
    layers = keras_layout(numpy_state(model), 18, fc_name="predictions")
    path = tmp_path / "tf_keras.h5"
    with h5py.File(path, "w") as f:
        write_keras_layers(f, layers, "keras2")
    convert_and_compare(model, path, tmp_path, "resnet18", "keras", 64)


def test_variant_override_changes_the_network(tmp_path):
    """--variant is honoured: a Keras 1 file forced to 'keras' gets the keras pool1."""
    model = randomize_torch(TorchResNet(18, "caffe"), seed=4)
    path = tmp_path / "keras1.h5"
    write("keras1", model, 18, path)
    out = tmp_path / "forced.h5"
    assert convert(path, out, variant="keras")["variant"] == "keras"
    net = minicnn.load(out)
    x = np.random.default_rng(2).standard_normal((1, 3, 64, 64)).astype(np.float32)
    with torch.no_grad():
        reference = model(torch.from_numpy(x)).numpy()
    assert np.abs(net.forward(x) - reference).max() > 1e-2 * np.abs(reference).max()
