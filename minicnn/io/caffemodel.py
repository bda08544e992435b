"""Read the layer blobs of a ``.caffemodel`` file without a protobuf library.

A caffemodel is one serialized ``caffe.NetParameter`` message. The protobuf
wire format is a sequence of fields, each a varint key
``field_number << 3 | wire_type`` followed by a value whose encoding the wire
type gives:

    0  varint (7 bits per byte, least significant group first, high bit = more)
    1  8 little-endian bytes (double)
    2  varint length, then that many bytes (string, sub-message, packed array)
    5  4 little-endian bytes (float)

A repeated numeric field is either *packed* (one wire-type-2 field holding all
values back to back) or *unpacked* (one field per value); both are accepted.
An unpacked run is a fixed stride of identical key bytes and one value each, so
it is found with NumPy a block at a time (blocks doubling while the key bytes
repeat) and read as one strided view: decoding stays linear in the data and
close to the packed case, instead of one Python step per value.

The fields read here (others are skipped)::

    NetParameter      layer = 100 (LayerParameter, current format)
                      layers = 2  (V1LayerParameter, format before 2015)
    LayerParameter    name = 1 (string), type = 2 (string), blobs = 7 (BlobProto)
    V1LayerParameter  name = 4 (string), type = 5 (enum LayerType), blobs = 6
    BlobProto         shape = 7 (BlobShape), data = 5 (float), double_data = 8,
                      legacy 4-d shape: num = 1, channels = 2, height = 3, width = 4
    BlobShape         dim = 1 (int64)

A blob takes its shape from ``shape`` when present, otherwise from the legacy
(num, channels, height, width), kept 4-d (an InnerProduct weight reads
(1, 1, out, in)); reshaping is left to the caller.

The file is treated as hostile: every length is checked against its message,
negative or too many dimensions are refused, non-finite weights are refused,
and a BatchNorm layer's scale factor (its third blob) must be one finite
number, not negative (zero means all-zero statistics, as in Caffe). Any
problem raises WeightsFormatError naming the file and the layer.
"""
import math
from collections import namedtuple

import numpy as np

from .errors import WeightsFormatError, check_finite

CaffeLayer = namedtuple("CaffeLayer", ["name", "type", "blobs"])
CaffeLayer.__doc__ = "One layer of a caffemodel: its name, type string and list of arrays."

# V1LayerParameter.LayerType values -> the type strings of the current format.
_V1_TYPES = {
    0: "", 1: "Accuracy", 2: "BNLL", 3: "Concat", 4: "Convolution", 5: "Data", 6: "Dropout",
    7: "EuclideanLoss", 8: "Flatten", 9: "HDF5Data", 10: "HDF5Output", 11: "Im2col",
    12: "ImageData", 13: "InfogainLoss", 14: "InnerProduct", 15: "LRN",
    16: "MultinomialLogisticLoss", 17: "Pooling", 18: "ReLU", 19: "Sigmoid", 20: "Softmax",
    21: "SoftmaxWithLoss", 22: "Split", 23: "TanH", 24: "WindowData", 25: "Eltwise",
    26: "Power", 27: "SigmoidCrossEntropyLoss", 28: "HingeLoss", 29: "MemoryData",
    30: "ArgMax", 31: "Threshold", 32: "DummyData", 33: "Slice", 34: "MVN", 35: "AbsVal",
    36: "Silence", 37: "ContrastiveLoss", 38: "Exp", 39: "Deconvolution",
}
_FIXED_SIZE = {1: 8, 5: 4}
MAX_DIMS = 32


def _varint(buf, pos, end):
    """Decode a varint at ``pos``; return (value, position after it)."""
    value = shift = 0
    while True:
        if pos >= end:
            raise WeightsFormatError("data ends inside a varint (file truncated?)")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise WeightsFormatError("a varint longer than 10 bytes (corrupted data)")


def _fields(buf, pos, end):
    """Yield (field number, wire type, value) for the fields of buf[pos:end].

    The value is the integer for wire type 0, the (start, end) span for wire
    type 2, and for the fixed types 1 and 5 a run ``(start, count, stride)``:
    ``count`` consecutive fields with the same key, the first value at
    ``start``, each ``stride`` bytes after the previous one.
    """
    while pos < end:
        key_start = pos
        key, pos = _varint(buf, pos, end)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos, end)
        elif wire in _FIXED_SIZE:
            key_bytes, width = buf[key_start:pos], _FIXED_SIZE[wire]
            stride, count = len(key_bytes) + width, 1
            if buf[pos + width:pos + width + len(key_bytes)] == key_bytes:
                count = _run_length(buf, key_start, end, key_bytes, stride)
            value, pos = (pos, count, stride), key_start + count * stride
        elif wire == 2:
            length, pos = _varint(buf, pos, end)
            value, pos = (pos, pos + length), pos + length
        else:
            raise WeightsFormatError(f"unsupported wire type {wire} for field {field} "
                                     "(not a caffemodel, or corrupted)")
        if pos > end:
            raise WeightsFormatError(f"field {field} runs past the end of its message "
                                     "(file truncated?)")
        yield field, wire, value


def _run_length(buf, start, end, key_bytes, stride):
    """How many records of ``stride`` bytes from ``start`` on begin with ``key_bytes``.

    Blocks of records are compared with NumPy, each block twice the last, so
    the work is proportional to the run found.
    """
    key = np.frombuffer(key_bytes, np.uint8)
    count, block = 1, 16
    while True:
        pos = start + count * stride
        n = min(block, (end - pos) // stride)
        if n <= 0:
            return count
        records = np.frombuffer(buf, np.uint8, n * stride, pos).reshape(n, stride)
        same = (records[:, :key.size] == key).all(axis=1)
        if not same.all():
            return count + int(np.argmin(same))
        count, block = count + n, block * 2


def _numbers(buf, wire, value, dtype):
    """A packed (wire type 2) or single unpacked float/double field as an array."""
    dtype = np.dtype(dtype)
    if wire == 2:
        start, end = value
        if (end - start) % dtype.itemsize:
            raise WeightsFormatError(f"packed {dtype} array of {end - start} bytes")
        return np.frombuffer(buf, dtype, (end - start) // dtype.itemsize, start)
    if _FIXED_SIZE.get(wire) != dtype.itemsize:
        raise WeightsFormatError(f"a {dtype} value with wire type {wire}")
    start, count, stride = value
    return np.ndarray((count,), dtype, buffer=buf, offset=start, strides=(stride,))


def _int64s(buf, wire, value):
    """A packed or single unpacked varint field as a list of signed ints."""
    if wire == 0:
        values = [value]
    elif wire == 2:
        values, (pos, end) = [], value
        while pos < end and len(values) <= MAX_DIMS:
            v, pos = _varint(buf, pos, end)
            values.append(v)
    else:
        raise WeightsFormatError(f"an integer with wire type {wire}")
    return [v - (1 << 64) if v >= 1 << 63 else v for v in values]


def _string(buf, span):
    try:
        return bytes(buf[span[0]:span[1]]).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise WeightsFormatError("a layer name or type that is not UTF-8") from exc


def _blob(buf, span, layer):
    shape, legacy, floats, doubles = None, {}, [], []
    for field, wire, value in _fields(buf, *span):
        if field == 7 and wire == 2:
            shape = []
            for sub, sub_wire, sub_value in _fields(buf, *value):
                if sub == 1:
                    shape.extend(_int64s(buf, sub_wire, sub_value))
                if len(shape) > MAX_DIMS:
                    raise WeightsFormatError(f"layer {layer!r}: a blob with more than "
                                             f"{MAX_DIMS} dimensions")
        elif field in (1, 2, 3, 4) and wire == 0:
            legacy[field] = _int64s(buf, wire, value)[0]
        elif field == 5:
            floats.append(_numbers(buf, wire, value, "<f4"))
        elif field == 8:
            doubles.append(_numbers(buf, wire, value, "<f8"))
    parts = doubles or floats
    data = np.concatenate(parts) if parts else np.zeros(0, np.float32)
    if shape is None:
        shape = [legacy.get(f, 0) for f in (1, 2, 3, 4)] if legacy else [data.size]
    if any(n < 0 for n in shape):
        raise WeightsFormatError(f"layer {layer!r}: a blob with negative dimensions "
                                 f"{tuple(shape)}")
    if math.prod(shape) != data.size:
        raise WeightsFormatError(f"layer {layer!r}: a blob of shape {tuple(shape)} holds "
                                 f"{data.size} values")
    return data.astype(data.dtype.newbyteorder("="), copy=True).reshape(shape)


def _check_layer(layer, path):
    """Refuse non-finite weights, and a BatchNorm factor that is empty, non-finite or < 0."""
    for index, blob in enumerate(layer.blobs):
        check_finite(blob, path, f"blob {index} of layer {layer.name!r} ({layer.type})")
    if layer.type == "BatchNorm" and len(layer.blobs) >= 3:
        factor = layer.blobs[2]
        if factor.size == 0:
            raise WeightsFormatError(f"{path}: BatchNorm layer {layer.name!r}: its scale "
                                     "factor blob is empty")
        if factor.ravel()[0] < 0:
            raise WeightsFormatError(f"{path}: BatchNorm layer {layer.name!r}: scale factor "
                                     f"{factor.ravel()[0]} is negative; it must be >= 0")
    return layer


def _layer(buf, span, v1):
    name_field, type_field, blobs_field = (4, 5, 6) if v1 else (1, 2, 7)
    name, kind, blob_spans = "", "", []
    for field, wire, value in _fields(buf, *span):
        if field == name_field and wire == 2:
            name = _string(buf, value)
        elif field == type_field and v1 and wire == 0:
            kind = _V1_TYPES.get(value, f"V1LayerType{value}")
        elif field == type_field and not v1 and wire == 2:
            kind = _string(buf, value)
        elif field == blobs_field and wire == 2:
            blob_spans.append(value)
    return CaffeLayer(name, kind, [_blob(buf, s, name) for s in blob_spans])


def read_caffemodel(path):
    """Return the layers of a caffemodel that carry blobs, in file order.

    Each is a ``CaffeLayer(name, type, blobs)``; ``blobs`` is a list of float32
    (or float64, from ``double_data``) arrays. Raises WeightsFormatError when the
    data is truncated or is not a NetParameter with weights.
    """
    path = str(path)
    with open(path, "rb") as f:
        buf = f.read()
    layers = []
    try:
        for field, wire, value in _fields(buf, 0, len(buf)):
            if field in (100, 2) and wire == 2:
                layer = _layer(buf, value, v1=field == 2)
                if layer.blobs:
                    layers.append(layer)
    except WeightsFormatError as exc:
        raise WeightsFormatError(f"{path}: {exc}") from None
    except (ValueError, TypeError, IndexError, OverflowError) as exc:  # numpy on damaged data
        raise WeightsFormatError(f"{path}: corrupted caffemodel ({type(exc).__name__}: "
                                 f"{exc})") from None
    if not layers:
        raise WeightsFormatError(f"{path}: no layer with weights found; not a caffemodel")
    return [_check_layer(layer, path) for layer in layers]
