"""read_torch_checkpoint: both torch.save layouts, checked against torch as an oracle,
and refusal of pickles that would run code."""
import collections
import os
import pickle
import re
import struct
import subprocess
import sys
import tempfile
import zipfile

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from fuzz_weights import RunsCommand
from minicnn.io import read_torch_checkpoint, UnsafeCheckpointError, WeightsFormatError

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


@pytest.fixture
def torch():
    return pytest.importorskip("torch")


def as_numpy(tensor):
    tensor = tensor.detach()
    if str(tensor.dtype) == "torch.bfloat16":
        tensor = tensor.float()
    return tensor.numpy()


def save(torch, obj, path, zip_format):
    torch.save(obj, path, _use_new_zipfile_serialization=zip_format)
    return path


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_state_dict_roundtrip_matches_torch(torch, tmp_path, zip_format):
    gen = torch.Generator().manual_seed(0)
    state = collections.OrderedDict([
        ("module.conv.weight", torch.randn(4, 3, 3, 3, generator=gen)),
        ("module.bn.running_mean", torch.randn(4, generator=gen, dtype=torch.float64)),
        ("module.bn.num_batches_tracked", torch.tensor(17)),
        ("module.half", torch.randn(2, 5, generator=gen).half()),
        ("module.long", torch.arange(-3, 9).reshape(3, 4)),
        ("module.int", torch.arange(6, dtype=torch.int32)),
        ("module.byte", torch.arange(250, 256, dtype=torch.uint8)),
        ("module.mask", torch.tensor([True, False, True])),
        ("module.bf16", torch.randn(7, generator=gen).bfloat16()),
        ("module.param", torch.nn.Parameter(torch.ones(2, 2))),
        ("module.empty", torch.zeros(0, 4)),
    ])
    path = save(torch, {"state_dict": state, "epoch": 12, "best_acc": 91.5}, tmp_path / "c.pt",
                zip_format)
    got = read_torch_checkpoint(path)
    assert list(got) == [k[len("module."):] for k in state]
    for key, tensor in state.items():
        array = got[key[len("module."):]]
        expected = as_numpy(tensor)
        assert array.dtype == expected.dtype, key
        assert array.shape == expected.shape, key
        np.testing.assert_array_equal(array, expected)
        assert array.flags.c_contiguous and array.flags.writeable
    assert got["bf16"].dtype == np.float32
    assert got["bn.num_batches_tracked"].shape == ()


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_views_sharing_one_storage(torch, tmp_path, zip_format):
    base = torch.arange(60, dtype=torch.float32).reshape(5, 12)
    views = {"base": base, "rows": base[1:4], "cols": base[:, 3:9:2], "t": base.t(),
             "offset": base.view(-1)[7:19].view(3, 4), "col": base[:, 5],
             "scalar": base[2, 3]}
    path = save(torch, views, tmp_path / "v.pt", zip_format)
    got = read_torch_checkpoint(path)
    for key, tensor in views.items():
        np.testing.assert_array_equal(got[key], tensor.numpy())
        assert got[key].flags.c_contiguous
    # contiguous tensors stay views of their one storage, as in torch (a file that
    # references one storage many times must not be copied many times)
    assert np.shares_memory(got["rows"], got["base"])
    got["rows"][0, 0] = -1
    assert got["base"][1, 0] == -1


@settings(max_examples=30, deadline=None)
@given(shape=st.lists(st.integers(1, 5), min_size=1, max_size=4),
       data=st.data(), zip_format=st.booleans(),
       dtype=st.sampled_from(["float32", "float64", "float16", "int64"]))
def test_random_strided_slices(shape, data, zip_format, dtype):
    torch = pytest.importorskip("torch")
    base = torch.arange(int(np.prod(shape)) * 2).to(getattr(torch, dtype)).reshape(
        [2 * shape[0]] + shape[1:])
    index = tuple(slice(data.draw(st.integers(0, n - 1)), None, data.draw(st.integers(1, 3)))
                  for n in base.shape)
    view = base[index]
    if data.draw(st.booleans()) and view.dim() > 1:
        view = view.transpose(0, view.dim() - 1)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "r.pt")
        torch.save({"x": view, "base": base}, path, _use_new_zipfile_serialization=zip_format)
        got = read_torch_checkpoint(path)
    np.testing.assert_array_equal(got["x"], view.numpy())
    assert got["x"].dtype == np.dtype(dtype)


def test_wrappers_and_nesting(torch, tmp_path):
    obj = {"model": {"encoder": {"w": torch.ones(2)}, "head": [torch.zeros(1), 3]},
           "optimizer": {"lr": 0.1}, "epoch": 3}
    got = read_torch_checkpoint(save(torch, obj, tmp_path / "n.pt", True))
    assert sorted(got) == ["encoder.w", "head.0"]


def test_zip_top_folder_name_varies(torch, tmp_path):
    path = save(torch, {"w": torch.arange(4.0)}, tmp_path / "some_name.pt", True)
    renamed = tmp_path / "renamed.pt"
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(renamed, "w") as dst:
        for info in src.infolist():
            dst.writestr("archive/" + info.filename.split("/", 1)[1], src.read(info))
    for p in (path, renamed):
        np.testing.assert_array_equal(read_torch_checkpoint(p)["w"], [0, 1, 2, 3])


def test_big_endian_zip_records(torch, tmp_path):
    values = torch.arange(6, dtype=torch.float32) * 1.5
    path = save(torch, {"w": values, "i": torch.arange(3)}, tmp_path / "le.pt", True)
    swapped = tmp_path / "be.pt"
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(swapped, "w") as dst:
        for info in src.infolist():
            body = src.read(info)
            if info.filename.endswith("/byteorder"):
                body = b"big"
            elif "/data/" in info.filename and not info.filename.endswith(".pkl"):
                width = 4 if info.filename.endswith("/0") else 8
                body = np.frombuffer(body, f"<u{width}").astype(f">u{width}").tobytes()
            dst.writestr(info.filename, body)
    got = read_torch_checkpoint(swapped)
    np.testing.assert_array_equal(got["w"], values.numpy())
    np.testing.assert_array_equal(got["i"], [0, 1, 2])
    assert got["w"].dtype.isnative


def test_real_akamaster_checkpoint_matches_torch(torch):
    path = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "cifar10",
                        "resnet20-12fca82f.th")
    if not os.path.exists(path):
        pytest.skip("../shared/data/cifar10/resnet20-12fca82f.th is not available")
    got = read_torch_checkpoint(path)
    ref = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    assert list(got) == [k.replace("module.", "", 1) for k in ref]
    for key, tensor in ref.items():
        np.testing.assert_array_equal(got[key.replace("module.", "", 1)], tensor.numpy())


# -- pickles that try to run code ------------------------------------------------------
class CallsEval:
    def __reduce__(self):
        return (eval, ("__import__('os').getcwd()",))


def torch_like_zip(path, payload):
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", payload)
        z.writestr("archive/byteorder", b"little")
        z.writestr("archive/version", b"3\n")
        z.writestr("archive/data/0", b"\0" * 16)
    return path


def legacy_stream(path, payload, where="object"):
    parts = [pickle.dumps(LEGACY_MAGIC, 2), pickle.dumps(1001, 2),
             pickle.dumps({"protocol_version": 1001, "little_endian": True}, 2), payload,
             pickle.dumps([], 2)]
    if where == "magic":
        parts[0] = payload
    path.write_bytes(b"".join(parts))
    return path


@pytest.mark.parametrize("protocol", [0, 2, 5])
@pytest.mark.parametrize("layout", ["zip", "legacy", "legacy-magic"])
def test_os_system_is_refused_and_not_run(tmp_path, protocol, layout):
    marker = tmp_path / "pwned_minicnn"
    payload = pickle.dumps({"weight": RunsCommand(f"touch {marker}")}, protocol)
    if layout == "zip":
        path = torch_like_zip(tmp_path / "evil.pt", payload)
    else:
        path = legacy_stream(tmp_path / "evil.pt", payload,
                             "magic" if layout == "legacy-magic" else "object")
    with pytest.raises(UnsafeCheckpointError) as info:
        read_torch_checkpoint(path)
    message = str(info.value)
    assert f"{os.system.__module__}.system" in message
    assert "not a plain tensor checkpoint" in message and str(path) in message
    assert not marker.exists()
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("layout", ["zip", "legacy"])
def test_eval_and_other_globals_are_refused(tmp_path, layout):
    payload = pickle.dumps({"w": CallsEval()}, 2)
    path = (torch_like_zip(tmp_path / "e.pt", payload) if layout == "zip"
            else legacy_stream(tmp_path / "e.pt", payload))
    with pytest.raises(UnsafeCheckpointError, match=r"__builtin__\.eval"):
        read_torch_checkpoint(path)
    payload = pickle.dumps({"w": subprocess.Popen}, 4)
    with pytest.raises(UnsafeCheckpointError, match="subprocess.Popen"):
        read_torch_checkpoint(torch_like_zip(tmp_path / "p.pt", payload))


def test_whole_pickled_module_is_refused(torch, tmp_path):
    path = save(torch, torch.nn.Linear(2, 3), tmp_path / "m.pt", True)
    with pytest.raises(UnsafeCheckpointError, match="torch.nn.modules.linear.Linear"):
        read_torch_checkpoint(path)


# -- damaged and foreign files -----------------------------------------------------------
@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.95])
def test_truncated_file(torch, tmp_path, zip_format, fraction):
    path = save(torch, {"w": torch.randn(64, 64), "b": torch.randn(64)}, tmp_path / "t.pt",
                zip_format)
    data = path.read_bytes()
    cut = tmp_path / "cut.pt"
    cut.write_bytes(data[:int(len(data) * fraction)])
    with pytest.raises(WeightsFormatError) as info:
        read_torch_checkpoint(cut)
    assert str(cut) in str(info.value)


def test_zip_storage_shorter_than_tensor(torch, tmp_path):
    path = save(torch, {"w": torch.randn(10)}, tmp_path / "s.pt", True)
    bad = tmp_path / "bad.pt"
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(bad, "w") as dst:
        for info in src.infolist():
            body = src.read(info)
            dst.writestr(info.filename, body[:12] if info.filename.endswith("data/0") else body)
    with pytest.raises(WeightsFormatError, match="storage '0'"):
        read_torch_checkpoint(bad)


def test_legacy_storage_cut_short(torch, tmp_path):
    path = save(torch, {"w": torch.randn(10)}, tmp_path / "s.pt", False)
    data = path.read_bytes()  # ends with the 8-byte count (10) and 40 bytes of data
    assert struct.unpack("<q", data[-48:-40])[0] == 10
    bad = tmp_path / "bad.pt"
    bad.write_bytes(data[:-48] + struct.pack("<q", 4) + data[-40:-24])
    with pytest.raises(WeightsFormatError, match="holds 16 bytes but the checkpoint declares 40"):
        read_torch_checkpoint(bad)


def tensor_pickle(numel, offset, size, stride, key="0"):
    """A hand-assembled protocol-2 pickle of {'x': tensor}, as torch.save writes it."""
    def text(value):
        value = value.encode()
        return b"X" + struct.pack("<I", len(value)) + value

    def integer(value):
        return b"J" + struct.pack("<i", value)

    def tup(items):
        return b"(" + b"".join(items) + b"t"
    storage = tup([text("storage"), b"ctorch\nFloatStorage\n", text(key), text("cpu"),
                   integer(numel)])
    args = tup([storage + b"Q", integer(offset), tup(map(integer, size)),
                tup(map(integer, stride)), b"\x89", b"ccollections\nOrderedDict\n)R"])
    return (b"\x80\x02}" + text("x") + b"ctorch._utils\n_rebuild_tensor_v2\n" + args + b"R"
            + b"s.")


@pytest.mark.parametrize("numel, offset, size, stride, message", [
    (4, 0, (10,), (1,), "has 4 float32 elements but a tensor of size (10,) at offset 0 needs 10"),
    (5, 3, (2, 2), (2, 1), "needs 7"),
    (8, 0, (2, 2), (-1, 1), "malformed tensor geometry"),
    (8, 0, (2, 2), (1,), "malformed tensor geometry"),
])
def test_storage_shorter_than_tensor_is_refused(tmp_path, numel, offset, size, stride, message):
    path = tmp_path / "g.pt"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", tensor_pickle(numel, offset, size, stride))
        z.writestr("archive/data/0", np.arange(numel, dtype="<f4").tobytes())
    with pytest.raises(WeightsFormatError, match=re.escape(message)):
        read_torch_checkpoint(path)


def test_hand_assembled_tensor_and_missing_record(tmp_path):
    path = tmp_path / "ok.pt"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", tensor_pickle(12, 2, (2, 3), (1, 4)))
        z.writestr("archive/data/0", np.arange(12, dtype="<f4").tobytes())
    expected = np.lib.stride_tricks.as_strided(np.arange(12, dtype=np.float32)[2:], (2, 3),
                                               (4, 16))
    np.testing.assert_array_equal(read_torch_checkpoint(path)["x"], expected)
    missing = tmp_path / "missing.pt"
    with zipfile.ZipFile(missing, "w") as z:
        z.writestr("archive/data.pkl", tensor_pickle(12, 0, (2,), (1,), key="7"))
    with pytest.raises(WeightsFormatError, match="archive/data/7"):
        read_torch_checkpoint(missing)


def test_not_a_checkpoint(tmp_path):
    text = tmp_path / "notes.pt"
    text.write_text("hello")
    with pytest.raises(WeightsFormatError, match="not a PyTorch checkpoint"):
        read_torch_checkpoint(text)
    plain = tmp_path / "plain.pkl"
    plain.write_bytes(pickle.dumps({"a": [1, 2]}, 2))
    with pytest.raises(WeightsFormatError, match="magic number"):
        read_torch_checkpoint(plain)
    archive = tmp_path / "other.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("readme.txt", "x")
    with pytest.raises(WeightsFormatError, match="data.pkl"):
        read_torch_checkpoint(archive)
    with pytest.raises(FileNotFoundError):
        read_torch_checkpoint(tmp_path / "missing.pt")


def test_minicnn_io_never_imports_torch(tmp_path):
    code = ("import sys, minicnn, minicnn.io, minicnn.io.mapping\n"
            "bad = [m for m in ('torch', 'caffe', 'keras', 'google.protobuf', 'tensorflow') "
            "if m in sys.modules]\n"
            "assert not bad, bad\n")
    subprocess.run([sys.executable, "-c", code], check=True)
