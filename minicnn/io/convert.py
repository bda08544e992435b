"""Convert foreign weights files into minicnn's HDF5 format.

The source format is recognised from the file's first bytes: HDF5 (Keras),
zip (PyTorch's torch.save), a pickle stream (PyTorch's legacy format), or else
a Caffe protobuf. The architecture is inferred from the layer names and shapes
unless given; the variant follows from the source (a Keras 1 file holds the
Caffe model, a newer Keras file the Keras model, a .pth the torchvision model,
a CIFAR checkpoint the option-A CIFAR net) unless given. VGG-16/19 files (names
features.0, block1_conv1 or conv1_1) convert to ``vgg16``/``vgg19`` with the
variant of their source: 'torchvision', 'keras' or 'caffe'. The converted weights
are loaded into the network built from that description, so every name and
shape is checked before anything is written; the output appears only once
complete.
"""
import json
from pathlib import Path

from ..models import build
from . import mapping, resnet_names, vgg_mapping, vgg_names
from .caffemodel import read_caffemodel
from .download import weights_home
from .errors import WeightsFormatError
from .files import file_digest
from .hdf5 import write_weights
from .keras_h5 import read_keras_h5
from .torch_checkpoint import read_torch_checkpoint

IMAGENET_CAFFE = {"color": "BGR", "scale": 1.0, "mean": [103.939, 116.779, 123.68],
                  "std": [1.0, 1.0, 1.0], "resize": 256, "crop": 224, "input_size": [224, 224]}
IMAGENET_TORCH = {"color": "RGB", "scale": 1 / 255, "mean": [0.485, 0.456, 0.406],
                  "std": [0.229, 0.224, 0.225], "resize": 256, "crop": 224,
                  "input_size": [224, 224]}
CIFAR = {"color": "RGB", "scale": 1 / 255, "mean": [0.485, 0.456, 0.406],
         "std": [0.229, 0.224, 0.225], "resize": None, "crop": None, "input_size": [32, 32]}
PREPROCESSING = {"caffe": IMAGENET_CAFFE, "keras": IMAGENET_CAFFE,
                 "torchvision": IMAGENET_TORCH, "cifar": CIFAR}
VGG_CONVERTERS = {"torchvision": vgg_mapping.torchvision_vgg_to_minicnn,
                  "keras": vgg_mapping.keras_vgg_to_minicnn,
                  "caffe": vgg_mapping.caffe_vgg_to_minicnn}
CLASSIFIER_BIAS = ("fc.bias", "fc8.bias")  # ResNets, VGG
CIFAR10_LABELS = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                  "ship", "truck"]


def sniff(path):
    """Name the container format of a weights file from its first bytes."""
    with open(path, "rb") as f:
        head = f.read(8)
    if head.startswith(b"\x89HDF\r\n\x1a\n"):
        return "hdf5"
    if head.startswith(b"PK\x03\x04"):
        return "torch-zip"
    if head[:1] == b"\x80":
        return "torch-legacy"
    if not head:
        raise WeightsFormatError(f"{path}: the file is empty")
    return "caffemodel"


def read_labels(path):
    """Class names from a Keras class-index JSON or a text file, one per line."""
    text = Path(path).read_text(encoding="utf-8")
    if Path(path).suffix == ".json":
        index = json.loads(text)
        return [index[str(i)][1] for i in range(len(index))]
    return [line.strip() for line in text.splitlines() if line.strip()]


def default_labels(num_classes, variant):
    if variant == "cifar" and num_classes == 10:
        return CIFAR10_LABELS
    index = weights_home() / "imagenet_class_index.json"
    if num_classes == 1000 and index.is_file():
        return read_labels(index)
    return None


def _vgg_state(source, convention, arch, variant):
    depth = vgg_names.vgg_depth(source, arch, convention)
    return f"vgg{depth}", variant or convention, VGG_CONVERTERS[convention](source, depth)


def to_state(path, arch=None, variant=None):
    """Read a foreign file and map it onto minicnn names: (arch, variant, state)."""
    kind = sniff(path)
    if kind == "hdf5":
        layers = read_keras_h5(path)
        if vgg_names.wants_vgg(layers, arch):
            return _vgg_state(layers, "keras", arch, variant)
        keras1 = resnet_names.is_keras1(layers)
        arch = arch or resnet_names.infer_keras_arch(layers)
        variant = variant or ("caffe" if keras1 else "keras")
        state = (mapping.keras1_resnet_to_minicnn if keras1 else mapping.keras_resnet_to_minicnn)(
            layers, arch)
    elif kind == "caffemodel":
        layers = read_caffemodel(path)
        if vgg_names.wants_vgg(layers, arch):
            return _vgg_state(layers, "caffe", arch, variant)
        arch = arch or resnet_names.infer_caffe_arch(layers)
        variant = variant or "caffe"
        state = mapping.caffe_resnet_to_minicnn(layers, arch)
    else:
        checkpoint = read_torch_checkpoint(path)
        if vgg_names.wants_vgg(checkpoint, arch):
            return _vgg_state(checkpoint, "torchvision", arch, variant)
        arch = arch or resnet_names.infer_torch_arch(checkpoint)
        if arch.startswith("cifar_"):
            variant = variant or "cifar"
            state = mapping.cifar_resnet_to_minicnn(checkpoint, arch)
        else:
            variant = variant or "torchvision"
            state = mapping.torchvision_resnet_to_minicnn(checkpoint, arch)
    return arch, variant, state


def convert(src, dst, arch=None, variant=None, labels=None, source=None):
    """Convert ``src`` into a minicnn weights file at ``dst``; returns the metadata."""
    src, dst = Path(src), Path(dst)
    if not src.is_file():
        raise FileNotFoundError(f"source weights {str(src)!r} do not exist")
    if src.resolve() == dst.resolve():
        raise ValueError("the output must not overwrite the source file; choose another name")
    arch, variant, state = to_state(src, arch, variant)
    classifier = [key for key in CLASSIFIER_BIAS if key in state]
    if not classifier:
        raise WeightsFormatError(f"{src}: no classifier ('fc' or 'fc8') weights were found")
    num_classes = int(state[classifier[0]].shape[0])
    if num_classes < 1:
        raise WeightsFormatError(f"{src}: the classifier '{classifier[0]}' has no classes")
    try:
        net = build(arch, variant, num_classes=num_classes)
        net.load_state_dict(state)
    except (KeyError, ValueError) as error:
        message = error.args[0] if error.args else error
        raise WeightsFormatError(f"{src} does not fit {arch} ({variant}): {message}") from None
    label_list = read_labels(labels) if labels else default_labels(num_classes, variant)
    if label_list is not None and len(label_list) != num_classes:
        raise ValueError(f"{len(label_list)} labels given for {num_classes} classes")
    metadata = {
        "arch": arch, "variant": variant, "num_classes": num_classes,
        "labels": label_list or [f"class {i}" for i in range(num_classes)],
        "preprocessing": PREPROCESSING[variant],
        "source": {"file": src.name, "sha256": file_digest(src), **(source or {})},
    }
    write_weights(dst, net.state_dict(), metadata)
    return metadata
