"""Regression tests for hostile weights files: each defect of the hostile-files issue,
built from the file it describes (hangs, memory from small files, bytes read from
outside the file, unclean errors, silently accepted damage, slow decoding)."""
import shutil
import signal
import struct
import tracemalloc
import zipfile

import h5py
import numpy as np
import pytest

import fuzz_weights as fw
from foreign_files import key, layer, message, net, varint
from minicnn.io import (UnsafeCheckpointError, WeightsFormatError, caffemodel, read_caffemodel,
                        read_keras_h5, read_torch_checkpoint)
from minicnn.io.convert import convert
from minicnn.io.hdf5 import read_weights
from minicnn.io.model_file import DEFAULT_WEIGHTS, load


@pytest.fixture(scope="module")
def seeds(tmp_path_factory):
    pytest.importorskip("torch")
    return fw.make_seeds(tmp_path_factory.mktemp("seeds"))


@pytest.fixture(scope="module")
def old_file(tmp_path_factory):
    """The shipped model as minicnn wrote files before checksums: HDF5's earliest
    layout (symbol-table nodes, no checksums), unfiltered arrays and variable-length
    string attributes."""
    path = tmp_path_factory.mktemp("old") / "old.h5"
    with h5py.File(DEFAULT_WEIGHTS, "r") as src, h5py.File(path, "w", libver="earliest") as dst:
        def attrs(source, target):
            for name, value in source.attrs.items():
                target.attrs[name] = value.decode() if isinstance(value, bytes) else value

        def copy(name, item):
            if isinstance(item, h5py.Dataset):
                dst.create_dataset(name, data=item[()])
            else:
                dst.require_group(name)
            attrs(item, dst[name])
        attrs(src, dst)
        src.visititems(copy)
    return path


@pytest.fixture
def deadline():
    """Turn a regression into a hang into a failure: SIGALRM interrupts Python loops."""
    def expire(*_):
        raise TimeoutError("the reader did not finish within 20 s")
    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(20)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def edited(seed, path, edit):
    shutil.copyfile(seed, path)
    with h5py.File(path, "r+") as f:
        edit(f)
    return path


def refused(function, path, *fragments):
    """Call ``function(path)``; it must raise WeightsFormatError naming the file and fragments."""
    with pytest.raises(WeightsFormatError) as info:
        function(path)
    message = str(info.value)
    assert str(path) in message
    for fragment in fragments:
        assert fragment in message, message
    return message


def peak_bytes(function, *args):
    tracemalloc.start()
    try:
        function(*args)
    except WeightsFormatError:
        pass
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


def tensor_files(tmp_path, name, obj_for, storages):
    return [fw.zip_file(tmp_path / f"{name}.zip.th", obj_for(False), storages),
            fw.legacy_file(tmp_path / f"{name}.legacy.th", obj_for(True), storages)]


# -- hangs ------------------------------------------------------------------------------
def test_state_dict_containing_itself_is_a_cycle_not_a_hang(tmp_path, deadline):
    def self_cycle(legacy):  # d = {}; d['state_dict'] = d
        return b"\x80\x02}" + fw.p_put(0) + fw.p_str("state_dict") + fw.p_get(0) + b"s."
    for path in tensor_files(tmp_path, "self", self_cycle, ()):
        assert len(path.read_bytes()) < 400
        refused(read_torch_checkpoint, path, "reference cycle")


def test_two_dict_cycle_is_a_cycle_not_a_hang(tmp_path, deadline):
    a, b = {}, {}
    a["state_dict"], b["state_dict"] = b, a
    for path in tensor_files(tmp_path, "two", lambda legacy: fw.pickle.dumps(a, 2), ()):
        refused(read_torch_checkpoint, path, "reference cycle")


# -- memory from small files --------------------------------------------------------------
@pytest.mark.parametrize("legacy", [True, False], ids=["legacy", "zip"])
def test_30000_references_to_one_tensor_share_one_array(tmp_path, legacy, deadline):
    numel = 1 << 18  # a 1 MiB tensor
    storage = [("0", np.arange(numel, dtype="<f4").tobytes())]
    tensor = fw.p_tensor("0", numel, 0, (numel,), (1,), legacy) + fw.p_put(0)
    pkl = fw.p_dict([("w0", tensor)] + [(f"w{i}", fw.p_get(0)) for i in range(1, 30_000)])
    path = (fw.legacy_file(tmp_path / "many.th", pkl, storage) if legacy
            else fw.zip_file(tmp_path / "many.th", pkl, storage))
    size = path.stat().st_size
    assert size < 2 << 20
    peak = peak_bytes(read_torch_checkpoint, path)
    # the old reader copied the tensor 30,000 times (30 GiB); now: the file, its one
    # storage and 30,000 names (a few hundred bytes of Python objects each)
    assert peak < 8 * size
    state = read_torch_checkpoint(path)
    assert len(state) == 30_000
    assert all(array is state["w0"] for array in state.values())
    np.testing.assert_array_equal(state["w12345"], np.arange(numel, dtype=np.float32))


def test_deflate_bomb_storage_is_refused_before_inflating(tmp_path):
    path = fw.zip_bomb(tmp_path / "bomb.th", gib=1.5)
    assert path.stat().st_size < 2 << 20
    with zipfile.ZipFile(path) as z:  # a real bomb: the entry inflates to 1.5 GiB
        assert z.getinfo("archive/data/0").file_size == 3 << 29
    peak = peak_bytes(read_torch_checkpoint, path)
    refused(read_torch_checkpoint, path, "1,610,612,736 bytes", "refused before reading")
    assert peak < 8 << 20
    out = tmp_path / "out"
    out.mkdir()
    refused(lambda p: convert(p, out / "bomb.h5"), path)
    assert list(out.iterdir()) == []


@pytest.mark.parametrize("legacy", [True, False], ids=["legacy", "zip"])
def test_stride_zero_32768_square_tensor_is_refused(tmp_path, legacy):
    pkl = fw.p_dict([("w", fw.p_tensor("0", 1, 0, (32768, 32768), (0, 0), legacy))])
    storage = [("0", np.ones(1, "<f4").tobytes())]
    path = (fw.legacy_file(tmp_path / "s0.th", pkl, storage) if legacy
            else fw.zip_file(tmp_path / "s0.th", pkl, storage))
    assert peak_bytes(read_torch_checkpoint, path) < 1 << 20
    refused(read_torch_checkpoint, path, "stride (0, 0)", "1,073,741,824 elements")


def test_huge_memo_index_is_refused_before_unpickling(tmp_path):
    path = fw.zip_file(tmp_path / "memo.th", b"\x80\x02}" + fw.p_put(0xFFFFFFF0) + b".", ())
    assert peak_bytes(read_torch_checkpoint, path) < 1 << 20
    refused(read_torch_checkpoint, path, "memo index")


def test_gigabyte_hdf5_dataset_is_refused_before_reading(seeds, tmp_path):
    def huge(f):
        del f["layers/fc/weight"]
        f.create_dataset("layers/fc/weight", shape=(1 << 14, 1 << 14), dtype="<f4")
    path = edited(seeds["minicnn"], tmp_path / "huge.h5", huge)
    assert path.stat().st_size < 1 << 20
    assert peak_bytes(load, path) < 16 << 20
    refused(load, path, "layer 'fc' array 'weight'", "(10, 64)", "(16384, 16384)")
    assert peak_bytes(read_weights, path) < 16 << 20
    refused(read_weights, path, "1,073,741,824 bytes", "refused before reading")


def test_num_classes_of_a_billion_is_refused_before_build(seeds, tmp_path):
    path = edited(seeds["minicnn"], tmp_path / "classes.h5",
                  lambda f: f.attrs.__setitem__("num_classes", 10 ** 9))
    assert peak_bytes(load, path) < 16 << 20
    refused(load, path, "'num_classes' is 1000000000")


# -- files read from outside the weights file ------------------------------------------------
SECRETS = ["/etc/passwd", "/proc/self/environ", "/dev/urandom"]


def external(target, name, size):
    def edit(f):
        del f[name]
        f.create_dataset(name, shape=(size,), dtype="<f4", external=[(target, 0, 4 * size)])
    return edit


@pytest.mark.parametrize("target", SECRETS)
def test_external_storage_is_refused_in_own_files(seeds, tmp_path, target):
    path = edited(seeds["minicnn"], tmp_path / "ext.h5", external(target, "layers/fc/bias", 10))
    for reader in (load, read_weights):
        refused(reader, path, "layer 'fc' array 'bias'", f"external file '{target}'")


@pytest.mark.parametrize("target", SECRETS)
def test_keras_file_with_external_storage_neither_reads_nor_converts(seeds, tmp_path, target):
    path = edited(seeds["keras"], tmp_path / "ext.h5",
                  external(target, "conv1/conv1/bias:0", 4))
    refused(read_keras_h5, path, "'conv1/bias:0' of layer 'conv1'", f"external file '{target}'")
    out = tmp_path / "out"
    out.mkdir()
    refused(lambda p: convert(p, out / "converted.h5"), path, "external")
    assert list(out.iterdir()) == []


@pytest.mark.parametrize("kind", ["soft", "external", "dangling"])
def test_links_are_refused(seeds, tmp_path, kind):
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["bias"] = np.ones(10, np.float32)
    link = {"soft": h5py.SoftLink("/layers/conv1/weight"),
            "external": h5py.ExternalLink(str(other), "/bias"),
            "dangling": h5py.SoftLink("/no/such/thing")}[kind]

    def edit(f):
        del f["layers/fc/bias"]
        f["layers/fc/bias"] = link
    path = edited(seeds["minicnn"], tmp_path / "link.h5", edit)
    message = refused(load, path, "'/layers/fc/bias'")
    assert ("external link" if kind == "external" else "soft link") in message

    def keras_edit(f):
        del f["conv1/conv1/bias:0"]
        f["conv1/conv1/bias:0"] = link
    path = edited(seeds["keras"], tmp_path / "keras_link.h5", keras_edit)
    refused(read_keras_h5, path, "'/conv1/conv1/bias:0'", "link")


def test_virtual_dataset_is_refused(seeds, tmp_path):
    other = tmp_path / "source.h5"
    with h5py.File(other, "w") as f:
        f["bias"] = np.ones(10, np.float32)

    def edit(f):
        layout = h5py.VirtualLayout(shape=(10,), dtype="<f4")
        layout[:] = h5py.VirtualSource(str(other), "bias", shape=(10,))
        del f["layers/fc/bias"]
        f.create_virtual_dataset("layers/fc/bias", layout)
    path = edited(seeds["minicnn"], tmp_path / "vds.h5", edit)
    refused(load, path, "layer 'fc' array 'bias' is a virtual dataset")


# -- unclean errors, now WeightsFormatError naming file and place -----------------------------
def test_bad_symbol_table_node_signature(old_file, tmp_path):
    data = old_file.read_bytes()
    assert data.count(b"SNOD") > 0
    path = tmp_path / "snod.h5"
    path.write_bytes(data.replace(b"SNOD", b"XNOD", 1))
    refused(load, path, "corrupted HDF5 file")


@pytest.mark.parametrize("name, edit, fragments", [
    ("group is a dataset", lambda f: (f.__delitem__("layers/fc"),
                                      f.create_dataset("layers/fc", data=[1.0])),
     ["'layers/fc' is a dataset"]),
    ("no arch", lambda f: f.attrs.__delitem__("arch"), ["no 'arch' attribute"]),
    ("arch not UTF-8", lambda f: f.attrs.__setitem__("labels", np.bytes_(b"[\"\xff\"]")),
     ["'labels' is not UTF-8"]),
    ("nested labels", lambda f: f.attrs.__setitem__("labels", "[" * 100000 + "]" * 100000),
     ["'labels' nests JSON more than 32 levels"]),
    ("format_version inf", lambda f: f.attrs.__setitem__("format_version", np.inf),
     ["'format_version' is inf"]),
    ("arch unknown", lambda f: f.attrs.__setitem__("arch", "resnet7"), ["resnet7"]),
])
def test_malformed_own_files_give_one_error_type(seeds, tmp_path, name, edit, fragments):
    path = edited(seeds["minicnn"], tmp_path / "bad.h5", edit)
    for reader in (load, read_weights):
        refused(reader, path, *fragments)


def test_keras_layer_names_not_utf8(seeds, tmp_path):
    path = edited(seeds["keras"], tmp_path / "names.h5",
                  lambda f: f.attrs.__setitem__("layer_names", np.array([b"conv\xff"])))
    refused(read_keras_h5, path, "'layer_names'", "not UTF-8")


def test_caffe_empty_batchnorm_factor_and_negative_dims(tmp_path):
    path = tmp_path / "bn.caffemodel"
    path.write_bytes(net(layer("bn", "BatchNorm", [np.ones(3), np.ones(3), np.zeros(0)])))
    refused(read_caffemodel, path, "BatchNorm layer 'bn'", "factor blob is empty")
    blob = (message(7, message(1, varint(-2) + varint(-6)))
            + message(5, np.ones(12, "<f4").tobytes()))
    path.write_bytes(message(100, message(1, b"fc") + message(7, blob)))
    refused(read_caffemodel, path, "layer 'fc'", "negative dimensions (-2, -6)")


def test_torch_errors_say_what_is_wrong(tmp_path):
    """A cycle or an unsafe global is reported as such, not as 'truncated or corrupted',
    and every torch error is a WeightsFormatError."""
    pkl = fw.pickle.dumps({"state_dict": {"w": fw.RunsCommand("true")}}, 2)
    path = fw.zip_file(tmp_path / "evil.th", pkl, ())
    with pytest.raises(UnsafeCheckpointError) as info:
        read_torch_checkpoint(path)
    assert isinstance(info.value, WeightsFormatError) and "truncated" not in str(info.value)


# -- damage that was accepted silently -------------------------------------------------------
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_weights_are_refused_naming_the_layer(seeds, tmp_path, value):
    def poison(name):
        def edit(f):
            data = f[name][()]
            data.flat[2] = value
            del f[name]
            f[name] = data
        return edit
    path = edited(seeds["minicnn"], tmp_path / "own.h5", poison("layers/res2a.bn2a/running_var"))
    refused(load, path, "layer 'res2a.bn2a' array 'running_var'", "non-finite")
    path = edited(seeds["keras"], tmp_path / "keras.h5", poison("predictions/predictions/kernel:0"))
    refused(read_keras_h5, path, "of layer 'predictions'", "non-finite")
    path = tmp_path / "w.caffemodel"
    path.write_bytes(net(layer("conv1", "Convolution", [np.array([1.0, value, 2.0])])))
    refused(read_caffemodel, path, "layer 'conv1'", "non-finite")
    data = np.array([1.0, value, 2.0, 3.0], "<f4").tobytes()
    for path in tensor_files(tmp_path, "t", lambda legacy: fw.p_dict(
            [("layer1.0.conv1.weight", fw.p_tensor("0", 4, 0, (4,), (1,), legacy))]),
            [("0", data)]):
        refused(read_torch_checkpoint, path, "'layer1.0.conv1.weight'", "non-finite")


@pytest.mark.parametrize("factor, problem", [(np.nan, "non-finite"), (np.inf, "non-finite"),
                                             (-0.5, "negative")])
def test_caffe_batchnorm_factor_must_be_finite_and_not_negative(tmp_path, factor, problem):
    path = tmp_path / "bn.caffemodel"
    path.write_bytes(net(layer("bn2a", "BatchNorm", [np.ones(3), np.ones(3), np.array([factor])])))
    refused(read_caffemodel, path, "'bn2a'", problem)


def test_caffe_batchnorm_factor_zero_is_accepted(tmp_path):
    path = tmp_path / "bn.caffemodel"
    path.write_bytes(net(layer("bn2a", "BatchNorm", [np.zeros(3), np.zeros(3), np.zeros(1)])))
    (bn,) = read_caffemodel(path)
    assert bn.blobs[2][0] == 0


def test_unknown_zip_byteorder_is_refused(tmp_path):
    pkl = fw.p_dict([("w", fw.p_tensor("0", 4, 0, (4,), (1,), False))])
    storage = [("0", np.ones(4, "<f4").tobytes())]
    for order in (b"middle", b"", b"LITTLE"):
        path = fw.zip_file(tmp_path / "order.th", pkl, storage, byteorder=order)
        refused(read_torch_checkpoint, path, "unknown byte order")
    path = fw.zip_file(tmp_path / "big.th", pkl, [("0", np.ones(4, ">f4").tobytes())],
                       byteorder=b"big\n")
    np.testing.assert_array_equal(read_torch_checkpoint(path)["w"], np.ones(4))


def test_classifier_with_zero_classes_is_refused(seeds, tmp_path):
    torch = pytest.importorskip("torch")
    path = edited(seeds["minicnn"], tmp_path / "zero.h5",
                  lambda f: f.attrs.__setitem__("num_classes", 0))
    refused(load, path, "'num_classes' is 0")
    checkpoint = torch.load(seeds["torch-zip"])
    for name in ("module.linear.weight", "module.linear.bias"):
        checkpoint["state_dict"][name] = checkpoint["state_dict"][name][:0]
    source = tmp_path / "zero.th"
    torch.save(checkpoint, source)
    out = tmp_path / "out"
    out.mkdir()
    refused(lambda p: convert(p, out / "zero.h5"), source, "has no classes")
    assert list(out.iterdir()) == []


# -- checksums ----------------------------------------------------------------------------
def test_own_format_arrays_are_checksummed(seeds, tmp_path):
    with h5py.File(seeds["minicnn"], "r") as f:
        dataset = f["layers/res3a.branch2a/weight"]
        plist = dataset.id.get_create_plist()
        assert [plist.get_filter(i)[0] for i in range(plist.get_nfilters())] == \
            [h5py.h5z.FILTER_FLETCHER32]
        offset, values = dataset.id.get_offset() or 0, dataset[()]
    if not offset:  # chunked: find the array's bytes in the file
        offset = seeds["minicnn"].read_bytes().index(values.tobytes()[:64])
    data = bytearray(seeds["minicnn"].read_bytes())
    data[offset + 100] ^= 0x01  # one bit of one weight
    path = tmp_path / "flip.h5"
    path.write_bytes(bytes(data))
    refused(load, path)


def test_old_files_without_the_filter_still_load(old_file):
    with h5py.File(old_file, "r") as f:
        assert f["layers/fc/weight"].id.get_create_plist().get_nfilters() == 0
        assert f.attrs.get_id("arch").dtype.hasobject  # variable-length strings
    old, new = load(old_file), load()
    assert old.metadata["arch"] == "cifar_resnet8"
    assert {k: v for k, v in old.metadata.items() if k != "path"} == \
        {k: v for k, v in new.metadata.items() if k != "path"}
    for name, value in new.state_dict().items():
        np.testing.assert_array_equal(old.state_dict()[name], value)


def test_zip_crc_is_checked(seeds, tmp_path):
    data = bytearray(seeds["torch-zip"].read_bytes())
    with zipfile.ZipFile(seeds["torch-zip"]) as z:
        info = z.getinfo(next(n for n in z.namelist() if n.endswith("/data/0")))
        raw = z.read(info)
    data[data.index(raw[:64]) + 10] ^= 0x04
    path = tmp_path / "crc.th"
    path.write_bytes(bytes(data))
    refused(read_torch_checkpoint, path, "CRC")


# -- unpacked caffemodel floats ------------------------------------------------------------
def test_unpacked_floats_decode_in_a_few_steps(tmp_path, monkeypatch):
    """Decoding one field per value used one Python step per value (17 s for a
    ResNet-18); runs of them are now found with NumPy: the number of varints
    decoded no longer grows with the number of values."""
    calls = []
    original = caffemodel._varint

    def counted(*args):
        calls.append(1)
        return original(*args)
    monkeypatch.setattr(caffemodel, "_varint", counted)
    steps = {}
    rng = np.random.default_rng(0)
    for n in (1_000, 100_000):
        values = rng.standard_normal(n).astype(np.float32)
        for data in ("unpacked", "packed", "unpacked-double"):
            path = tmp_path / f"{data}{n}.caffemodel"
            path.write_bytes(net(layer("fc", "InnerProduct", [values.reshape(10, -1)],
                                       data=data.replace("-", ""))))
            calls.clear()
            (fc,) = read_caffemodel(path)
            steps[(data, n)] = len(calls)
            np.testing.assert_array_equal(fc.blobs[0].ravel(), values)
    assert steps[("unpacked", 100_000)] <= steps[("unpacked", 1_000)] + 2
    assert steps[("unpacked", 100_000)] < steps[("packed", 100_000)] + 10
    assert steps[("unpacked-double", 100_000)] <= steps[("unpacked-double", 1_000)] + 2


def test_unpacked_runs_split_by_other_fields(tmp_path):
    """Unpacked values interleaved with other fields, and a key with a two-byte varint."""
    values = np.arange(40, dtype=np.float32)
    chunks = [b"".join(key(5, 5) + struct.pack("<f", v) for v in values[i:i + 7])
              for i in range(0, 40, 7)]
    body = message(7, message(1, varint(40))) + (key(9, 0) + varint(3)).join(chunks)
    body += b"".join(key(300, 5) + struct.pack("<f", 9.0) for _ in range(5))  # skipped field
    path = tmp_path / "split.caffemodel"
    path.write_bytes(message(100, message(1, b"fc") + message(7, body)))
    (fc,) = read_caffemodel(path)
    np.testing.assert_array_equal(fc.blobs[0], values)
