"""Errors raised while reading weights files.

Every reader treats its file as hostile and reports any problem with it as a
:class:`WeightsFormatError` (a ``ValueError``) naming the file, the layer or
dataset, and what is wrong; exceptions of the underlying libraries (HDF5,
pickle, zip, protobuf decoding) are translated at each reader's boundary.
"""
import math

import numpy as np


class WeightsFormatError(ValueError):
    """A weights file is truncated, corrupted, crafted, or not in the expected layout.

    The message names the file (and the layer, dataset or key) and what is wrong.
    """


class UnsafeCheckpointError(WeightsFormatError):
    """A pickled checkpoint asks to load a global outside the tensor allowlist.

    Such a file could run arbitrary code when unpickled, so nothing in it is
    executed: reading stops at the first refused global.
    """


class WeightsMismatchError(WeightsFormatError, KeyError):
    """A weights file lacks arrays its network needs, or holds arrays it has no slot for.

    Also a ``KeyError``, the error ``Network.load_state_dict`` raises for the
    same mismatch.
    """
    __str__ = ValueError.__str__


def check_finite(array, path, name):
    """Refuse an array holding NaN or infinity, naming ``name`` in ``path``.

    The sum is one fast pass that is non-finite whenever an element is; only if
    it is (or overflowed) is the exact, slower elementwise test run.
    """
    if array.dtype.kind not in "fc" or array.size == 0:
        return array
    with np.errstate(over="ignore", invalid="ignore"):
        if math.isfinite(abs(complex(array.sum()))):
            return array
        bad = int(array.size - np.count_nonzero(np.isfinite(array)))
    if bad:
        raise WeightsFormatError(f"{path}: {name} holds {bad} non-finite value(s) (NaN or "
                                 "infinity) among its weights; the file is corrupted or crafted")
    return array
