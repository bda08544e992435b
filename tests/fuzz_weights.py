"""Hostile weights files for the tests: crafted files, seeded mutants, and a worker
that loads them in a subprocess under a memory limit.

* ``make_seeds(folder)``: one small valid file per format (minicnn HDF5, Keras
  HDF5, caffemodel, torch zip, torch legacy).
* ``crafted_cases(folder, seeds, marker)``: files built to attack a reader
  (links, external storage, pickles that run code, cycles, bombs, ...), each
  with the outcome it must have.
* ``mutant_cases(folder, seeds, count, seed)``: seeded random damage
  (truncation, bit flips, byte overwrites, insertions) to the seeds.
* ``run_cases(cases, folder)``: loads every case in worker subprocesses, many
  per process; a case that hangs or kills its worker is recorded as such and
  the rest of the batch runs in a fresh worker.

Run as ``python fuzz_weights.py LIST OUT`` it is the worker: it loads each
file of LIST with the readers and ``convert`` and writes one JSON line per case.
"""
import hashlib
import json
import os
import pickle
import selectors
import shutil
import struct
import subprocess
import sys
import time
import zipfile
import zlib
from collections import namedtuple
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
FORMATS = ("minicnn", "keras", "caffe", "torch-zip", "torch-legacy")
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
MEMORY_LIMIT = 3 << 29  # 1.5 GiB of address space above what the worker holds after imports
CASE_TIMEOUT = 30.0

Case = namedtuple("Case", ["name", "format", "path", "expect"])
"""expect: 'ok' (must load), 'error' (must be refused cleanly), 'either' (damaged at random)."""


# -- pickles and zips, assembled by hand ---------------------------------------------------
def p_str(text):
    data = text.encode()
    return b"X" + struct.pack("<I", len(data)) + data


def p_int(value):
    if -2 ** 31 <= value < 2 ** 31:
        return b"J" + struct.pack("<i", value)
    data = value.to_bytes((value.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8a" + bytes([len(data)]) + data


def p_tuple(items):
    return b"(" + b"".join(items) + b"t"


def p_global(module, name):
    return b"c" + f"{module}\n{name}\n".encode()


def p_put(index):
    return b"r" + struct.pack("<I", index)


def p_get(index):
    return b"j" + struct.pack("<I", index)


def p_tensor(key, numel, offset, size, stride, legacy, storage="FloatStorage"):
    """A call torch._utils._rebuild_tensor_v2(<storage pid>, offset, size, stride, False,
    OrderedDict())."""
    pid = [p_str("storage"), p_global("torch", storage), p_str(key), p_str("cpu"), p_int(numel)]
    if legacy:
        pid.append(b"N")
    args = [p_tuple(pid) + b"Q", p_int(offset), p_tuple(map(p_int, size)),
            p_tuple(map(p_int, stride)), b"\x89", p_global("collections", "OrderedDict") + b")R"]
    return p_global("torch._utils", "_rebuild_tensor_v2") + p_tuple(args) + b"R"


def p_dict(items):
    """A protocol-2 pickle of a dict from (key, pickled value) pairs."""
    return b"\x80\x02}(" + b"".join(p_str(k) + v for k, v in items) + b"u."


def legacy_file(path, object_pickle, storages, little_endian=True):
    """A legacy torch.save stream: magic, protocol, sys info, object, keys, storages."""
    parts = [pickle.dumps(LEGACY_MAGIC, 2), pickle.dumps(1001, 2),
             pickle.dumps({"protocol_version": 1001, "little_endian": little_endian}, 2),
             object_pickle, pickle.dumps([key for key, _ in storages], 2)]
    for _, data in storages:
        parts += [struct.pack("<q", len(data) // 4), data]
    path.write_bytes(b"".join(parts))
    return path


def zip_file(path, object_pickle, storages, byteorder=b"little", compress=()):
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", object_pickle)
        z.writestr("archive/byteorder", byteorder)
        for key, data in storages:
            z.writestr(f"archive/data/{key}", data,
                       zipfile.ZIP_DEFLATED if key in compress else zipfile.ZIP_STORED)
    return path


def zip_bomb(path, gib=1.5):
    """A torch zip whose one storage inflates from about a megabyte to ``gib`` GiB of zeros.

    The deflate stream repeats one fully flushed block of a MiB of zeros, so it
    is made without ever holding the inflated bytes.
    """
    mib = int(gib * 1024)
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = compressor.compress(bytes(1 << 20)) + compressor.flush(zlib.Z_FULL_FLUSH)
    stream = block * mib + zlib.compressobj(9, zlib.DEFLATED, -15).flush(zlib.Z_FINISH)
    crc, zeros = 0, bytes(1 << 20)
    for _ in range(mib):
        crc = zlib.crc32(zeros, crc)
    numel = (mib << 20) // 4
    pkl = p_dict([("w", p_tensor("0", numel, 0, (numel,), (1,), False))])
    entries = [("archive/data.pkl", pkl, zlib.crc32(pkl), len(pkl), 0),
               ("archive/byteorder", b"little", zlib.crc32(b"little"), 6, 0),
               ("archive/data/0", stream, crc, mib << 20, 8)]
    out, central = bytearray(), bytearray()
    for name, data, crc32, size, method in entries:
        name = name.encode()
        header = struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, method, 0, 0, crc32, len(data),
                             size, len(name), 0)
        central += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, method, 0, 0, crc32,
                               len(data), size, len(name), 0, 0, 0, 0, 0, len(out)) + name
        out += header + name + data
    out += central + struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(entries), len(entries),
                                 len(central), len(out), 0)
    path.write_bytes(bytes(out))
    return path


class RunsCommand:
    """Pickles as a call to os.system: the payload of a code-running checkpoint."""

    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


class OpensFile:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


# -- seeds ------------------------------------------------------------------------------
def make_seeds(folder):
    """One small valid file per format; returns {format: path}."""
    sys.path.insert(0, str(HERE))
    from foreign_files import layer, net, write_keras_layers
    from minicnn.io.model_file import save
    from minicnn.models import cifar_resnet
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    seeds = {}
    model = cifar_resnet(8, rng=0)
    seeds["minicnn"] = save(model, folder / "seed.h5", arch="cifar_resnet8", variant="cifar",
                            num_classes=10, labels=[str(i) for i in range(10)])
    small = {"conv1": {"kernel": rng.standard_normal((3, 3, 3, 4)).astype(np.float32),
                       "bias": rng.standard_normal(4).astype(np.float32)},
             "relu": None,
             "predictions": {"kernel": rng.standard_normal((4, 5)).astype(np.float32),
                             "bias": rng.standard_normal(5).astype(np.float32)}}
    import h5py
    with h5py.File(folder / "seed_keras.h5", "w") as f:
        write_keras_layers(f, small, "keras2")
    seeds["keras"] = folder / "seed_keras.h5"
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    stats = [rng.random(4).astype(np.float32) * 2, rng.random(4).astype(np.float32) + 1,
             np.array([2.0], np.float32)]
    seeds["caffe"] = folder / "seed.caffemodel"
    seeds["caffe"].write_bytes(net(
        layer("conv1", "Convolution", [w, w[:, 0, 0, 0]]),
        layer("bn_conv1", "BatchNorm", stats, data="unpacked"),
        layer("scale_conv1", "Scale", [stats[0], stats[1]], dims="unpacked"),
        layer("fc", "InnerProduct", [rng.standard_normal((5, 4)).astype(np.float32)],
              dims="legacy")))
    state = {name.replace("fc.", "linear."): value for name, value in
             _akamaster_like(model).items()}
    torch = _torch()
    if torch is not None:
        tensors = {f"module.{k}": torch.from_numpy(np.ascontiguousarray(v))
                   for k, v in state.items()}
        checkpoint = {"state_dict": tensors, "best_prec1": 91.5, "epoch": 3}
        seeds["torch-zip"] = folder / "seed_zip.th"
        torch.save(checkpoint, seeds["torch-zip"])
        seeds["torch-legacy"] = folder / "seed_legacy.th"
        torch.save(checkpoint, seeds["torch-legacy"], _use_new_zipfile_serialization=False)
    return seeds


def _torch():
    try:
        import torch
        return torch
    except ImportError:
        return None


def _akamaster_like(model):
    """A minicnn CIFAR ResNet's state under akamaster's names (conv1, layer1.0.conv1, ...)."""
    names = {"conv1": "conv1", "bn_conv1": "bn1", "fc": "fc"}
    out = {}
    for key, value in model.state_dict().items():
        layer, param = key.rsplit(".", 1)
        if layer in names:
            torch_layer = names[layer]
        else:  # res<stage><letter>.branch2a / .bn2a
            block, part = layer.split(".")
            stage, index = int(block[3]) - 1, ord(block[4]) - ord("a")
            kind = "conv" if part.startswith("branch") else "bn"
            torch_layer = f"layer{stage}.{index}.{kind}{'ab'.index(part[-1]) + 1}"
        out[f"{torch_layer}.{param}"] = np.asarray(value)
    return out


# -- random damage ----------------------------------------------------------------------
MUTATIONS = ("truncate", "bitflip", "header-bitflip", "overwrite", "insert")


def mutate(data, rng):
    """Return (mutation name, damaged bytes)."""
    kind = MUTATIONS[rng.integers(len(MUTATIONS))]
    data = bytearray(data)
    n = len(data)
    head = min(n, 4096)
    if kind == "truncate":
        cut = int(rng.integers(0, head if rng.random() < 0.5 else n))
        return kind, bytes(data[:cut])
    if kind in ("bitflip", "header-bitflip"):
        span = head if kind == "header-bitflip" else n
        for _ in range(int(rng.integers(1, 9))):
            pos = int(rng.integers(span))
            data[pos] ^= 1 << int(rng.integers(8))
        return kind, bytes(data)
    pos = int(rng.integers(head if rng.random() < 0.5 else n))
    length = int(rng.integers(1, 65))
    fill = rng.choice([b"\x00", b"\xff", None])
    chunk = (fill * length if fill is not None else rng.bytes(length))
    if kind == "overwrite":
        data[pos:pos + length] = chunk[:max(0, min(length, n - pos))]
        return kind, bytes(data)
    return kind, bytes(data[:pos] + chunk + data[pos:])


def mutant_cases(folder, seeds, count, seed=0):
    """``count`` damaged copies of the seeds, spread evenly over the formats."""
    folder = Path(folder)
    rng = np.random.default_rng(seed)
    formats = [f for f in FORMATS if f in seeds]
    raw = {f: Path(seeds[f]).read_bytes() for f in formats}
    cases = []
    for i in range(count):
        fmt = formats[i % len(formats)]
        kind, data = mutate(raw[fmt], rng)
        path = folder / f"mutant{i:05d}{Path(seeds[fmt]).suffix}"
        path.write_bytes(data)
        cases.append(Case(f"{kind}", fmt, path, "either"))
    return cases


# -- crafted attacks --------------------------------------------------------------------
def _copy(seed, path):
    shutil.copyfile(seed, path)
    return path


def _h5_edit(seed, path, edit):
    import h5py
    _copy(seed, path)
    with h5py.File(path, "r+") as f:
        edit(f)
    return path


def _replace(f, name, **options):
    del f[name]
    f.create_dataset(name, **options)


def hdf5_attacks(seed, keras):
    """{name: edit(h5py.File)} for an own-format (keras=False) or Keras file.

    Every edit hits the dataset ``target`` (a bias) or its group."""
    import h5py
    target = "conv1/conv1/bias:0" if keras else "layers/fc/bias"
    group = target.rsplit("/", 1)[0]
    size = 4 if keras else 10
    other = Path(seed).with_name(Path(seed).stem + "_other.h5")
    if not other.exists():
        with h5py.File(other, "w") as f:
            f["bias"] = np.ones(size, np.float32)
            f["g/bias"] = np.ones(size, np.float32)

    def external(source):
        return lambda f: _replace(f, target, shape=(size,), dtype="<f4",
                                  external=[(source, 0, 4 * size)])

    def virtual(f):
        layout = h5py.VirtualLayout(shape=(size,), dtype="<f4")
        layout[:] = h5py.VirtualSource(str(other), "bias", shape=(size,))
        del f[target]
        f.create_virtual_dataset(target, layout)

    def link(kind):
        def edit(f):
            del f[target]
            f[target] = {"soft": h5py.SoftLink("/" + target.replace("bias", "weight")
                                               if not keras else "/conv1/conv1/kernel:0"),
                         "dangling": h5py.SoftLink("/nowhere"),
                         "external": h5py.ExternalLink(str(other), "/bias")}[kind]
        return edit

    def group_link(f):
        del f[group]
        f[group] = h5py.ExternalLink(str(other), "/g")

    def nonfinite(value):
        def edit(f):
            data = f[target][()]
            data[1] = value
            _replace(f, target, data=data)
        return edit
    attacks = {
        "external storage /etc/passwd": external("/etc/passwd"),
        "external storage /proc/self/environ": external("/proc/self/environ"),
        "external storage /dev/urandom": external("/dev/urandom"),
        "virtual dataset": virtual,
        "soft link": link("soft"), "dangling soft link": link("dangling"),
        "external link": link("external"), "external link group": group_link,
        "NaN weight": nonfinite(np.nan), "infinite weight": nonfinite(-np.inf),
        "integer dataset": lambda f: _replace(f, target, data=np.arange(size)),
        "string dataset": lambda f: _replace(f, target, data=b"abc"),
        "unallocated 4 GiB dataset": lambda f: _replace(f, target, shape=(1 << 30,),
                                                        dtype="<f4"),
        "gzip bomb dataset": lambda f: _replace(f, target, data=np.zeros(1 << 24, np.float32),
                                                compression="gzip", chunks=(1 << 22,)),
        "null dataspace": lambda f: _replace(f, target, dtype="<f4", shape=None),
        "group where a dataset is": lambda f: (f.__delitem__(target), f.create_group(target)),
        "dataset where a group is": lambda f: (f.__delitem__(group),
                                               f.create_dataset(group, data=[1.0])),
    }
    return attacks


def own_attribute_attacks():
    deep = "[" * 100_000 + "]" * 100_000
    values = {
        "num_classes": [10 ** 9, 0, -3, 2.5, "ten", True, np.inf],
        "format_version": [np.inf, "1", 99, -1, np.nan],
        "arch": ["resnet999", b"\xff\xfe", 12, "cifar_resnet9"],
        "variant": ["nope", 3],
        "labels": [deep, "[1, 2", '"not a list"', b"\xff\xfe\xfd", '["a"]', np.arange(3)],
        "preprocessing": ['{"resize": 1000000000}', '{"mean": [NaN, 0, 0]}', "[]", deep],
        "source": ["[1, 2]", deep],
        "format": ["other"],
    }
    attacks = {}
    for key, options in values.items():
        for value in options:
            attacks[f"attribute {key}={str(value)[:24]!r}"] = \
                (lambda f, k=key, v=value: f.attrs.__setitem__(k, v))
    for key in ("arch", "num_classes", "format"):
        attacks[f"no attribute {key}"] = lambda f, k=key: f.attrs.__delitem__(k)
    return attacks


def keras_attribute_attacks():
    return {
        "layer_names not UTF-8": lambda f: f.attrs.__setitem__("layer_names",
                                                               np.array([b"\xff\xfe"])),
        "layer_names integers": lambda f: f.attrs.__setitem__("layer_names", np.arange(3)),
        "weight_names not UTF-8": lambda f: f["conv1"].attrs.__setitem__(
            "weight_names", np.array([b"conv1/\xff:0"])),
        "weight name of a group": lambda f: f["conv1"].attrs.__setitem__(
            "weight_names", np.array([b"conv1"])),
        "listed layer missing": lambda f: f.attrs.__setitem__(
            "layer_names", np.array([b"conv1", b"ghost"])),
    }


def caffe_attacks():
    """{name: (bytes, expect)} caffemodels with bad BatchNorm factors, dims, floats."""
    sys.path.insert(0, str(HERE))
    from foreign_files import key, layer, message, net, varint
    stats = [np.ones(4, np.float32), np.ones(4, np.float32)]
    w = np.ones((4, 3), np.float32)

    def bn(factor):
        return net(layer("bn", "BatchNorm", stats + [np.array(factor, np.float32)]))
    attacks = {
        "BatchNorm factor NaN": (bn([np.nan]), "error"),
        "BatchNorm factor infinite": (bn([np.inf]), "error"),
        "BatchNorm factor negative": (bn([-1.0]), "error"),
        "BatchNorm factor empty": (bn(np.zeros(0)), "error"),
        "BatchNorm factor zero": (bn([0.0]), "ok"),
        "NaN weight": (net(layer("fc", "InnerProduct", [np.array([1.0, np.nan])])), "error"),
        "unpacked floats": (net(layer("fc", "InnerProduct", [w], data="unpacked")), "ok"),
    }
    header = message(1, b"fc") + message(2, b"InnerProduct")

    def blob(dims, payload):
        return message(100, header + message(7, message(7, message(1, b"".join(
            varint(d) for d in dims))) + message(5, payload)))
    attacks["negative dims"] = (blob([-2, -6], w.tobytes()), "error")
    attacks["huge dims"] = (blob([1 << 40, 1 << 40], w.tobytes()), "error")
    attacks["40 dims"] = (blob([1] * 40, w.tobytes()), "error")
    attacks["length past the end"] = (key(100, 2) + varint(1 << 62) + header, "error")
    attacks["group wire type"] = (key(100, 3) + header, "error")
    return attacks


def torch_attacks(folder, marker):
    """{name: (writer(path), expect)} crafted torch checkpoints."""
    data = np.arange(16, dtype="<f4").tobytes()

    def both(obj_for, storages=(("0", data),)):
        return {"zip": lambda p: zip_file(p, obj_for(False), storages),
                "legacy": lambda p: legacy_file(p, obj_for(True), storages)}

    def tensor(legacy, numel=16, size=(16,), stride=(1,), key="0"):
        return p_tensor(key, numel, 0, size, stride, legacy)

    def one(legacy):
        return p_dict([("w", tensor(legacy))])

    def self_cycle(legacy):  # d = {}; d['state_dict'] = d
        return b"\x80\x02}" + p_put(0) + p_str("state_dict") + p_get(0) + b"s."

    def two_cycle(legacy):  # a = {'state_dict': b}, b = {'state_dict': a}
        return (b"\x80\x02}" + p_put(0) + p_str("state_dict") + b"}" + p_put(1)
                + p_str("state_dict") + p_get(0) + b"s" + b"s.")

    def list_cycle(legacy):  # {'w': tensor, 'l': l} with l = [l]
        return (b"\x80\x02}(" + p_str("w") + tensor(legacy) + p_str("l") + b"]" + p_put(0)
                + p_get(0) + b"a" + b"u.")

    def many_references(legacy, count=30_000):
        items = [(f"w{i}", p_get(0)) for i in range(1, count)]
        return p_dict([("w0", tensor(legacy) + p_put(0))] + items)

    def many_views(legacy, count=3_000):
        return p_dict([(f"w{i}", p_tensor("0", 16, i % 8, (8,), (1,), legacy))
                       for i in range(count)])

    def doubling(legacy, levels=60):  # l_k = [l_{k-1}, l_{k-1}]: 2**60 paths
        out = b"\x80\x02" + b"]" + tensor(legacy) + b"a" + p_put(0)
        for k in range(1, levels):
            out += b"](" + p_get(k - 1) + p_get(k - 1) + b"e" + p_put(k)
        return out + b"0}" + p_str("x") + p_get(levels - 1) + b"s."

    def memo_index(legacy):
        return b"\x80\x02}" + p_put(0xFFFFFFF0) + b"."

    def stride_zero(legacy):
        return p_dict([("w", tensor(legacy, 1, (32768, 32768), (0, 0)))])

    def huge_storage(legacy):
        return p_dict([("w", tensor(legacy, 1 << 40, (1 << 40,), (1,)))])

    def payload(legacy, obj):
        return pickle.dumps({"state_dict": {"w": obj}}, 2)
    attacks = {}
    for name, obj_for, storages in (
            ("self-containing state_dict", self_cycle, ()), ("two-dict cycle", two_cycle, ()),
            ("list cycle", list_cycle, (("0", data),)),
            ("doubling lists", doubling, (("0", data),)),
            ("huge memo index", memo_index, ()),
            ("stride-0 32768x32768 tensor", stride_zero, (("0", data[:4]),)),
            ("storage of 2**40 elements", huge_storage, (("0", data),))):
        for layout, writer in both(obj_for, storages).items():
            attacks[f"{name} ({layout})"] = (writer, "error")
    for layout, writer in both(many_references).items():
        attacks[f"30,000 references to one tensor ({layout})"] = (writer, "ok")
    for layout, writer in both(many_views).items():
        attacks[f"3,000 views of one storage ({layout})"] = (writer, "ok")
    evil = {"os.system": RunsCommand(f"touch {marker}"), "open": OpensFile(str(marker)),
            "subprocess.Popen": subprocess.Popen, "eval": eval}
    for name, obj in evil.items():
        for layout, writer in both(lambda legacy, o=obj: payload(legacy, o)).items():
            attacks[f"pickle calling {name} ({layout})"] = (writer, "error")
    nan = np.array([1.0, np.nan] * 8, "<f4").tobytes()
    attacks["NaN tensor (zip)"] = (lambda p: zip_file(p, one(False), [("0", nan)]), "error")
    attacks["NaN tensor (legacy)"] = (lambda p: legacy_file(p, one(True), [("0", nan)]), "error")
    attacks["byteorder 'middle'"] = (lambda p: zip_file(p, one(False), [("0", data)],
                                                        byteorder=b"middle"), "error")
    attacks["little_endian='maybe'"] = (lambda p: legacy_file(p, one(True), [("0", data)],
                                                              little_endian="maybe"), "error")
    attacks["deflated storage (small)"] = (lambda p: zip_file(p, one(False), [("0", data)],
                                                              compress=("0",)), "ok")
    attacks["deflate bomb 1.5 GiB"] = (zip_bomb, "error")

    def traversal(p):
        with zipfile.ZipFile(p, "w") as z:
            z.writestr("../data.pkl", one(False))
            z.writestr("../data/0", data)
            z.writestr("archive/../../../evil_extracted", b"x")
        return p
    attacks["path traversal names"] = (traversal, "either")

    def bad_crc(p):
        zip_file(p, one(False), [("0", data)])
        raw = bytearray(p.read_bytes())
        raw[raw.index(data) + 5] ^= 0x10
        p.write_bytes(bytes(raw))
        return p
    attacks["storage bytes changed (CRC)"] = (bad_crc, "error")

    def legacy_count(p):
        legacy_file(p, one(True), [("0", data)])
        raw = bytearray(p.read_bytes())
        raw[-len(data) - 8:-len(data)] = struct.pack("<q", 1 << 60)
        p.write_bytes(bytes(raw))
        return p
    attacks["legacy storage count 2**60"] = (legacy_count, "error")
    return attacks


def crafted_cases(folder, seeds, marker):
    """Every crafted attack for the formats in ``seeds``, written under ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cases = []

    def add(name, fmt, path, expect):
        cases.append(Case(name, fmt, Path(path), expect))
    if "minicnn" in seeds:
        edits = {**hdf5_attacks(seeds["minicnn"], keras=False), **own_attribute_attacks()}
        for i, (name, edit) in enumerate(edits.items()):
            add(name, "minicnn", _h5_edit(seeds["minicnn"], folder / f"own{i:03d}.h5", edit),
                "error")
    if "keras" in seeds:
        edits = {**hdf5_attacks(seeds["keras"], keras=True), **keras_attribute_attacks()}
        for i, (name, edit) in enumerate(edits.items()):
            add(name, "keras", _h5_edit(seeds["keras"], folder / f"keras{i:03d}.h5", edit),
                "error")
    if "caffe" in seeds:
        for i, (name, (data, expect)) in enumerate(caffe_attacks().items()):
            path = folder / f"caffe{i:03d}.caffemodel"
            path.write_bytes(data)
            add(name, "caffe", path, expect)
    for i, (name, (writer, expect)) in enumerate(torch_attacks(folder, marker).items()):
        path = writer(folder / f"torch{i:03d}.th")
        add(name, "torch-zip" if zipfile.is_zipfile(path) else "torch-legacy", path, expect)
    return cases


# -- loading in subprocesses ------------------------------------------------------------
def run_cases(cases, folder, batch_size=150):
    """Load every case in worker subprocesses; returns one record per case, in order.

    A record has ``outcome`` ('ok', 'error', 'unnamed' (an error not naming the
    file), 'unclean' (any other exception), 'hang' or 'crash'), ``detail``,
    ``digest`` (of what loaded) and ``stages`` (each reader and convert call's
    outcome), ``left`` (files a failed convert left behind) and ``peak_rss``.
    """
    folder = Path(folder)
    results, pending = {}, list(range(len(cases)))
    while pending:
        batch = pending[:batch_size]
        listing = folder / "cases.jsonl"
        listing.write_text("".join(json.dumps([i, cases[i].format, str(cases[i].path)]) + "\n"
                                   for i in batch))
        progress = _run_worker(listing, folder, results)
        if not progress:
            raise RuntimeError(f"the fuzz worker made no progress on {len(batch)} cases")
        pending = [i for i in pending if i not in results]
    return [results[i] for i in range(len(cases))]


def _run_worker(listing, folder, results):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "OPENBLAS_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(
               [str(HERE.parent)] + os.environ.get("PYTHONPATH", "").split(os.pathsep))}
    stderr = open(folder / "worker.stderr", "w+")
    process = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), str(listing),
                                str(folder / "out")], stdout=subprocess.PIPE, stderr=stderr,
                               cwd=folder, env=env, text=True)
    selector = selectors.DefaultSelector()
    selector.register(process.stdout, selectors.EVENT_READ)
    started, progress = None, 0
    deadline = time.monotonic() + CASE_TIMEOUT * 4  # imports and the first case
    try:
        while True:
            if not selector.select(timeout=max(0.0, deadline - time.monotonic())):
                if started is not None:
                    results[started] = {"outcome": "hang", "detail": f"no answer within "
                                        f"{CASE_TIMEOUT:.0f} s", "stages": {}}
                    progress += 1
                return progress
            chunk = process.stdout.readline()
            if not chunk:
                break
            record = json.loads(chunk)
            if "start" in record:
                started = record["start"]
            else:
                results[record.pop("i")] = record
                started, progress = None, progress + 1
            deadline = time.monotonic() + CASE_TIMEOUT
        process.wait()
        if started is not None:
            stderr.seek(0)
            results[started] = {"outcome": "crash", "stages": {},
                                "detail": f"worker exit {process.returncode}: "
                                          f"{stderr.read()[-500:]}"}
            progress += 1
        return progress
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        selector.close()
        process.stdout.close()
        stderr.close()


def digest(obj):
    """sha256 over the names, dtypes, shapes and bytes of nested arrays."""
    h = hashlib.sha256()

    def add(name, value):
        if isinstance(value, dict):
            for key in sorted(value, key=str):
                add(f"{name}/{key}", value[key])
        elif isinstance(value, (list, tuple)):
            for i, item in enumerate(value):
                add(f"{name}/{i}", item)
        elif isinstance(value, np.ndarray):
            value = np.ascontiguousarray(value)
            h.update(f"{name}:{value.dtype}:{value.shape}".encode())
            h.update(value.tobytes())
        else:
            h.update(f"{name}={value!r}".encode())
    add("", obj)
    return h.hexdigest()


def _peak_rss_kib():
    """The worker's own peak resident memory in KiB. (getrusage's ru_maxrss would
    not do: Linux carries it across fork and exec, so a worker started by a large
    pytest process reports that process's peak.)"""
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM"))


def _worker(listing, out):
    import resource
    from minicnn.io import read_caffemodel, read_keras_h5, read_torch_checkpoint
    from minicnn.io.convert import convert
    from minicnn.io.errors import WeightsFormatError
    from minicnn.io.hdf5 import read_weights
    from minicnn.io.model_file import load
    with open("/proc/self/status") as status:
        vm = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmSize"))
    resource.setrlimit(resource.RLIMIT_AS, (vm + MEMORY_LIMIT, resource.RLIM_INFINITY))
    out = Path(out)

    def stage(function, path):
        try:
            return "ok", function(), ""
        except WeightsFormatError as error:
            return ("error" if str(path) in str(error) else "unnamed"), None, str(error)[:400]
        except BaseException as error:  # noqa: B036 - every other failure is the finding
            return "unclean", None, f"{type(error).__name__}: {error}"[:400]

    def own(path):
        net = load(path)
        meta = {k: v for k, v in net.metadata.items() if k != "path"}
        return digest({"state": net.state_dict(), "meta": json.dumps(meta, sort_keys=True)})
    readers = {"keras": read_keras_h5, "caffe": read_caffemodel,
               "torch-zip": read_torch_checkpoint, "torch-legacy": read_torch_checkpoint}
    for line in open(listing):
        index, fmt, path = json.loads(line)
        print(json.dumps({"start": index}), flush=True)
        start = time.perf_counter()
        stages, left, found = {}, [], None
        if fmt == "minicnn":
            outcome, found, detail = stage(lambda: own(path), path)
            stages["read_weights"] = stage(lambda: read_weights(path) and None, path)[0]
        else:
            outcome, found, detail = stage(lambda: digest(readers[fmt](path)), path)
            folder = out / f"case{index}"
            folder.mkdir(parents=True, exist_ok=True)
            converted = stage(lambda: convert(path, folder / "out.h5") and None, path)[0]
            if converted == "unnamed":  # convert's own messages name the source differently
                converted = "error"
            if converted == "ok":
                converted = stage(lambda: load(folder / "out.h5") and None, folder / "out.h5")[0]
                (folder / "out.h5").unlink()
            stages["convert"] = converted
            left = sorted(p.name for p in folder.iterdir())
            shutil.rmtree(folder)
        print(json.dumps({"i": index, "outcome": outcome, "detail": detail, "digest": found,
                          "stages": stages, "left": left,
                          "seconds": round(time.perf_counter() - start, 4),
                          "peak_rss": _peak_rss_kib()}),
              flush=True)


if __name__ == "__main__":
    _worker(*sys.argv[1:3])
