"""VGG-16 and VGG-19: the builder, the names, and every published layout converted and run.

End to end, as for the ResNets (test_convert_end_to_end.py): a torch VGG with
random weights (tests/torch_vgg.py) is saved as a torchvision zip or legacy
pickle, a Keras HDF5 (the published files' Keras 1 names and the Keras 2
ones, fc1 in channels-last order) or a caffemodel (V1 layers as in the 2014
releases, and the current format); ``minicnn.io.convert.convert`` turns it into
minicnn's format with the architecture inferred, ``minicnn.load`` reads it,
and the logits must match torch's within 1e-4 at 224 x 224.

A real VGG-16 file is 528 MiB, too heavy for the suite, so those files are
written for a narrow VGG of the same layout and names (``NARROW``), which the
registry builds while the ``narrow_registry`` fixture is active. The real
sizes are checked without a file: the converters' expected shapes against the
builder's (and the published parameter counts), and the converters on
real-size foreign state dicts of zeros, which NumPy allocates lazily.
"""
import hashlib

import h5py
import numpy as np
import pytest

import minicnn
from foreign_files import (vgg_caffe_layout, vgg_keras_layout, write_caffemodel,
                           write_caffemodel_v1, write_keras_layers)
from minicnn.io import CaffeLayer, WeightsFormatError
from minicnn.io import vgg_mapping
from minicnn.io.convert import PREPROCESSING, convert
from minicnn.io.download import REGISTRY, VGG19_DOWNLOADS, installed
from minicnn.io.vgg_names import (foreign_name, infer_vgg_arch, looks_like_vgg,
                                  vgg_state_shapes, wants_vgg)
from minicnn.layers import ShapeError
from minicnn.models import ARCHITECTURES, build
from minicnn.models.vgg import vgg

torch = pytest.importorskip("torch", reason="torch is the oracle: pip install 'minicnn[oracle]'")
from torch_resnets import assert_close, randomize_torch  # noqa: E402
from torch_vgg import TorchVGG  # noqa: E402

NARROW = dict(channels=(4, 8, 8, 16, 16), hidden=32)
NUM_CLASSES = 20
# layout -> the variant the converter must pick for it
VARIANT = {"torchvision-zip": "torchvision", "torchvision-legacy": "torchvision",
           "keras1": "keras", "keras2": "keras", "caffemodel-v1": "caffe",
           "caffemodel": "caffe"}
# torchvision's vgg16-397923af.pth / vgg19-dcbb9e9d.pth: where each conv sits in `features`
TORCHVISION_CONVS = {16: [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28],
                     19: [0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34]}
PUBLISHED_PARAMETERS = {16: 138_357_544, 19: 143_667_240}  # torchvision's model docs


@pytest.fixture(autouse=True)
def no_label_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MINICNN_HOME", str(tmp_path / "home"))  # no ImageNet labels found


@pytest.fixture
def narrow_registry(monkeypatch):
    """Let 'vgg16' and 'vgg19' build the NARROW widths, for convert() and load() alike."""
    for depth in (16, 19):
        def builder(variant=None, num_classes=None, rng=None, dtype=np.float32, depth=depth):
            return vgg(depth, variant or "torchvision", num_classes or 1000, rng, dtype, **NARROW)
        monkeypatch.setitem(ARCHITECTURES, f"vgg{depth}", builder)


@pytest.fixture
def lazy_init(monkeypatch):
    """Build real-size networks without drawing 138M random numbers: zero weights,
    which NumPy allocates lazily, so only the shapes cost anything."""
    def zeros(shape, fan_in, rng, dtype):
        return np.zeros(shape, dtype)
    monkeypatch.setattr("minicnn.layers.conv.kaiming_uniform", zeros)
    monkeypatch.setattr("minicnn.layers.linear.kaiming_uniform", zeros)


def numpy_state(model):
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


def torch_vgg(depth, seed):
    return randomize_torch(TorchVGG(depth, NUM_CLASSES, **NARROW), seed=seed)


def write(layout, model, depth, path):
    state = numpy_state(model)
    if layout == "torchvision-zip":
        torch.save(model.state_dict(), path)
    elif layout == "torchvision-legacy":  # the 2017 .pth files predate the zip format
        torch.save(model.state_dict(), path, _use_new_zipfile_serialization=False)
    elif layout in ("keras1", "keras2"):
        with h5py.File(path, "w") as f:
            write_keras_layers(f, vgg_keras_layout(state, depth, layout), layout)
    elif layout == "caffemodel-v1":
        write_caffemodel_v1(path, vgg_caffe_layout(state, depth))
    else:
        write_caffemodel(path, vgg_caffe_layout(state, depth))


# -- every layout, end to end --------------------------------------------------------
@pytest.mark.parametrize("layout", list(VARIANT))
@pytest.mark.parametrize("depth", [16, 19])
def test_vgg_files_convert_and_match_torch(tmp_path, narrow_registry, layout, depth):
    model = torch_vgg(depth, seed=depth)
    path = tmp_path / f"source.{layout}"
    write(layout, model, depth, path)
    out = tmp_path / "converted.h5"
    metadata = convert(path, out)
    variant = VARIANT[layout]
    assert (metadata["arch"], metadata["variant"]) == (f"vgg{depth}", variant)
    assert metadata["num_classes"] == NUM_CLASSES
    assert metadata["preprocessing"] == PREPROCESSING[variant]
    # Caffe's and Keras' VGG take BGR 0-255 minus the mean pixel, torchvision's RGB 0-1 / std
    expected_mean = [103.939, 116.779, 123.68] if variant != "torchvision" else [0.485, 0.456,
                                                                                   0.406]
    assert metadata["preprocessing"]["mean"] == expected_mean
    assert metadata["preprocessing"]["color"] == ("RGB" if variant == "torchvision" else "BGR")
    assert metadata["source"]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    net = minicnn.load(out)
    assert net.metadata["arch"] == f"vgg{depth}"
    x = np.random.default_rng(depth).standard_normal((2, 3, 224, 224)).astype(np.float32)
    logits = net.forward(x)
    with torch.no_grad():
        reference = model(torch.from_numpy(x)).numpy()
    assert logits.shape == reference.shape == (2, NUM_CLASSES)
    assert 0.3 < np.abs(reference).max() < 100  # random weights, but O(1) logits
    assert_close(logits, reference)


def test_keras_fc1_order_matters(tmp_path, narrow_registry):
    """Without the (H, W, C) -> (C, H, W) permutation of fc1 the logits would differ:
    the permutation is what makes the Keras layout match."""
    model = torch_vgg(16, seed=5)
    state = numpy_state(model)
    layers = vgg_keras_layout(state, 16)
    # the same fc1 rows in (C, H, W) order: right for torch, wrong for a Keras file
    layers["fc1"]["W_1"] = state["classifier.0.weight"].T
    path = tmp_path / "unpermuted.h5"
    with h5py.File(path, "w") as f:
        write_keras_layers(f, layers, "keras1")
    convert(path, tmp_path / "out.h5")
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    with torch.no_grad():
        reference = model(torch.from_numpy(x)).numpy()
    logits = minicnn.load(tmp_path / "out.h5").forward(x)
    assert np.abs(logits - reference).max() > 1e-2 * np.abs(reference).max()


def test_narrow_file_is_refused_by_the_real_vgg(tmp_path, lazy_init):
    """Without the narrow builder, the converter's widths come from the file and the
    published VGG-16 refuses them by name."""
    path = tmp_path / "narrow.pth"
    torch.save(torch_vgg(16, seed=1).state_dict(), path)
    with pytest.raises(WeightsFormatError, match=r"does not fit vgg16 \(torchvision\).*conv1_1"):
        convert(path, tmp_path / "out.h5")
    assert not (tmp_path / "out.h5").exists()


def test_explicit_arch_and_variant(tmp_path, narrow_registry):
    model = torch_vgg(19, seed=2)
    path = tmp_path / "vgg19.caffemodel"
    write("caffemodel-v1", model, 19, path)
    with pytest.raises(WeightsFormatError, match="3 entries that do not belong to VGG-16: "
                       "conv3_4, conv4_4, conv5_4"):
        convert(path, tmp_path / "out.h5", arch="vgg16")
    path = tmp_path / "vgg19.pth"
    torch.save(model.state_dict(), path)
    with pytest.raises(WeightsFormatError, match="no 'features.17.weight'"):
        convert(path, tmp_path / "out.h5", arch="vgg16")
    metadata = convert(path, tmp_path / "out.h5", arch="vgg19", variant="caffe")
    assert (metadata["arch"], metadata["variant"]) == ("vgg19", "caffe")
    with pytest.raises(WeightsFormatError, match="unknown VGG variant 'cifar'"):
        convert(path, tmp_path / "other.h5", variant="cifar")


@pytest.mark.parametrize("device", ["cpu", pytest.param("gpu", marks=pytest.mark.gpu)])
def test_converted_vgg_on_device(tmp_path, narrow_registry, device):
    model = torch_vgg(19, seed=7)
    path = tmp_path / "vgg19.caffemodel"
    write("caffemodel-v1", model, 19, path)
    convert(path, tmp_path / "out.h5")
    net = minicnn.load(tmp_path / "out.h5", device=device)
    x = np.random.default_rng(3).standard_normal((1, 3, 224, 224)).astype(np.float32)
    logits = minicnn.to_cpu(net.forward(minicnn.to_gpu(x) if device == "gpu" else x))
    with torch.no_grad():
        assert_close(logits, model(torch.from_numpy(x)))


# -- real sizes, without files ---------------------------------------------------------
@pytest.mark.parametrize("depth", [16, 19])
def test_expected_shapes_match_the_builder_at_real_size(lazy_init, depth):
    net = build(f"vgg{depth}", variant="caffe")
    shapes = {key: value.shape for key, value in net.state_dict().items()}
    assert shapes == vgg_state_shapes(depth)
    assert list(shapes) == list(vgg_state_shapes(depth))  # the same order too
    assert net.num_parameters() == PUBLISHED_PARAMETERS[depth]
    assert shapes["fc6.weight"] == (4096, 512 * 7 * 7)


def _real_torchvision_state(depth):
    state = {}
    for key, shape in vgg_state_shapes(depth).items():
        layer, param = key.split(".")
        if layer.startswith("conv"):
            block, index = map(int, layer[4:].split("_"))
            prefix = foreign_name(depth, "torchvision", (block, index))
        else:
            prefix = foreign_name(depth, "torchvision", int(layer[2:]))
        state[f"{prefix}.{param}"] = np.zeros(shape, np.float32)
    return state


@pytest.mark.parametrize("depth", [16, 19])
def test_converters_at_real_size(depth):
    expected = vgg_state_shapes(depth)
    state = _real_torchvision_state(depth)
    assert sorted({k.rsplit(".", 1)[0] for k in state if k.startswith("features")},
                  key=lambda m: int(m.split(".")[1])) == [
        f"features.{i}" for i in TORCHVISION_CONVS[depth]]
    converted = vgg_mapping.torchvision_vgg_to_minicnn(state)
    assert {k: v.shape for k, v in converted.items()} == expected
    # the 2014 caffemodels: legacy 4-d blobs, (1, 1, out, in) and (1, 1, 1, out)
    caffe = [CaffeLayer("data", "Data", [])]
    for key in expected:
        layer, param = key.split(".")
        legacy = (1,) * (4 - len(expected[key])) + expected[key]
        if param == "weight":
            caffe.append(CaffeLayer(layer, "InnerProduct" if layer.startswith("fc")
                                    else "Convolution", []))
        caffe[-1].blobs.append(np.zeros(legacy, np.float32))
    converted = vgg_mapping.caffe_vgg_to_minicnn(caffe)
    assert {k: v.shape for k, v in converted.items()} == expected


def test_real_size_shape_errors_name_the_foreign_entry():
    state = _real_torchvision_state(16)
    state["classifier.0.weight"] = np.zeros((4096, 25000), np.float32)
    with pytest.raises(WeightsFormatError, match=r"'fc6.weight' should have shape "
                       r"\(4096, 25088\) but torchvision 'classifier.0.weight' gives"):
        vgg_mapping.torchvision_vgg_to_minicnn(state)
    state = _real_torchvision_state(16)
    del state["features.28.bias"]
    with pytest.raises(WeightsFormatError, match="no 'features.28.bias'.*'conv5_3.bias'"):
        vgg_mapping.torchvision_vgg_to_minicnn(state, arch="vgg16")
    # Keras' fc1 must be (7 * 7 * C, out); a th_dim_ordering conv kernel is (out, in, 3, 3)
    layers = {"block1_conv1": {"W": np.zeros((64, 3, 3, 3)), "b": np.zeros(64)}}
    layers.update({f"block{b}_conv{i}": {} for b, n in enumerate((2, 2, 3, 3, 3), 1)
                   for i in range(1, n + 1) if (b, i) != (1, 1)})
    with pytest.raises(WeightsFormatError, match="th_dim_ordering"):
        vgg_mapping.keras_vgg_to_minicnn(layers)
    with pytest.raises(WeightsFormatError, match="not a multiple of 7 x 7"):
        vgg_mapping._fc1_to_fc6(np.zeros((25000, 4096), np.float32), "fc1")


# -- names and recognition ----------------------------------------------------------------
def test_layer_names_are_caffes():
    net = vgg(19, channels=NARROW["channels"], hidden=NARROW["hidden"])
    top = [n for n in net.names() if "." not in n]
    assert top[:5] == ["conv1_1", "relu1_1", "conv1_2", "relu1_2", "pool1"]
    assert top[-7:] == ["pool5", "flatten", "fc6", "relu6", "fc7", "relu7", "fc8"]
    assert sum(n.startswith("conv") for n in top) == 16 and "conv5_4" in top
    assert "conv5_4" not in vgg(16, **NARROW).names() and "conv5_3" in vgg(16, **NARROW).names()
    assert not any("drop" in n for n in top)
    assert net.metadata == {"arch": "vgg19", "variant": "torchvision", "num_classes": 1000}


def test_any_size_through_the_convolutions_but_224_for_the_classifier():
    net = vgg(16, **NARROW, rng=0)
    x = np.zeros((1, 3, 64, 96), np.float32)
    assert net.forward(x, stop_at="pool5").shape == (1, 16, 2, 3)
    with pytest.raises(ShapeError, match="fc6"):
        net.forward(x)


def test_builder_errors():
    with pytest.raises(ValueError, match="unknown VGG depth 11"):
        vgg(11)
    with pytest.raises(ValueError, match="unknown VGG variant 'cifar'"):
        build("vgg16", variant="cifar")
    with pytest.raises(ValueError, match="5 blocks"):
        vgg(16, channels=(8, 8))


@pytest.mark.parametrize("depth", [16, 19])
def test_inference_counts_convolutions(depth):
    torchvision = [f"features.{i}.{param}" for i in TORCHVISION_CONVS[depth]
                   for param in ("weight", "bias")]
    counts = (2, 2, 3, 3, 3) if depth == 16 else (2, 2, 4, 4, 4)
    keras = [f"block{b}_conv{i}" for b, n in enumerate(counts, 1) for i in range(1, n + 1)]
    caffe = [f"conv{b}_{i}" for b, n in enumerate(counts, 1) for i in range(1, n + 1)]
    for convention, names in (("torchvision", torchvision), ("keras", keras), ("caffe", caffe)):
        names = names + ["fc6", "fc1", "classifier.0.weight"]
        assert looks_like_vgg(names)
        assert infer_vgg_arch(names, convention) == f"vgg{depth}"


def test_inference_refuses_other_vggs_and_resnets():
    vgg11 = ["conv1_1", "conv2_1", "conv3_1", "conv3_2", "conv4_1", "conv4_2", "conv5_1",
             "conv5_2"]
    with pytest.raises(WeightsFormatError, match=r"8 convolutions \(1 \+ 1 \+ 2 \+ 2 \+ 2"):
        infer_vgg_arch(vgg11, "caffe")
    bn = [f"features.{i}.{p}" for i in range(13) for p in ("weight", "running_mean")]
    with pytest.raises(WeightsFormatError, match="vgg16_bn"):
        infer_vgg_arch(bn, "torchvision")
    with pytest.raises(WeightsFormatError, match="'block1_conv1'"):
        infer_vgg_arch(["conv1_conv"], "keras")
    resnets = [["conv1.weight", "bn1.weight", "layer1.0.conv1.weight", "fc.weight"],
               ["conv1", "bn_conv1", "res2a_branch2a", "fc1000"],
               ["conv1_conv", "conv2_block1_1_conv", "probs"]]
    for names in resnets:
        assert not looks_like_vgg(names) and not wants_vgg(names, None)
    assert wants_vgg(resnets[0], "vgg16") and not wants_vgg(["conv1_1"], "resnet50")


# -- downloads ---------------------------------------------------------------------------
def test_registry_entries():
    for depth in (16, 19):
        tv, keras = REGISTRY[f"torchvision_vgg{depth}"], REGISTRY[f"keras_vgg{depth}"]
        assert (tv["arch"], tv["variant"], keras["arch"], keras["variant"]) == (
            f"vgg{depth}", "torchvision", f"vgg{depth}", "keras")
        # torch.hub checks the sha256 prefix that the file name carries
        prefix = tv["url"].rsplit("-", 1)[1].removesuffix(".pth")
        assert tv["checksum"] == f"sha256:{prefix}" and len(prefix) == 8
        assert keras["url"].endswith(f"/v0.1/vgg{depth}_weights_tf_dim_ordering_tf_kernels.h5")
        assert keras["checksum"].startswith("md5:") and len(keras["checksum"]) == 4 + 32


def test_installed_finds_a_converted_download(tmp_path):
    assert installed(*VGG19_DOWNLOADS, folder=tmp_path) is None
    (tmp_path / "keras_vgg19.h5").write_bytes(b"")
    assert installed(*VGG19_DOWNLOADS, folder=tmp_path) == tmp_path / "keras_vgg19.h5"
    (tmp_path / "torchvision_vgg19.h5").write_bytes(b"")
    assert installed(*VGG19_DOWNLOADS, folder=tmp_path) == tmp_path / "torchvision_vgg19.h5"
    with pytest.raises(KeyError, match="'imagenet_class_index' is not a weights download"):
        installed("imagenet_class_index", folder=tmp_path)
