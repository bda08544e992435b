"""Array-module selection, device moves and dtype policy.

Every array function in minicnn asks its inputs which module they belong to
(``numpy`` or ``cupy``) and calls that module, so one code path serves the CPU
and the GPU. CuPy is optional: it is imported only when an array or a request
needs it, and asking for the GPU without it raises :class:`BackendError` with
the command that installs it.
"""
import numpy as np

DEFAULT_DTYPE = np.float32
"""Parameters are created in float32; gradient checks move a layer to float64."""

FLOAT_DTYPES = (np.float16, np.float32, np.float64)


class BackendError(RuntimeError):
    """The GPU was asked for but CuPy or a CUDA device is missing."""


def _cupy_if_imported():
    """Return the cupy module if it imports, else None (never raises)."""
    try:
        import cupy
    except Exception:  # ImportError, or a CUDA library that fails to load
        return None
    return cupy


def get_array_module(*arrays):
    """Return ``cupy`` if any argument is a CuPy array, else ``numpy``.

    Only arrays are inspected; ``None`` and Python scalars are ignored.
    """
    for a in arrays:
        if a is not None and type(a).__module__.startswith("cupy"):
            return _cupy_if_imported()
    return np


def gpu_available():
    """True when CuPy imports and sees at least one CUDA device."""
    cupy = _cupy_if_imported()
    if cupy is None:
        return False
    try:
        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


def require_cupy():
    """Return the cupy module, or raise BackendError saying how to get a GPU."""
    cupy = _cupy_if_imported()
    if cupy is None:
        raise BackendError(
            "the GPU was asked for, but CuPy is not installed; install it with "
            "pip install 'minicnn[cuda]' (CUDA 12) on a machine with an NVIDIA GPU, "
            "or keep the arrays on the CPU")
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as error:
        raise BackendError(
            f"CuPy is installed but cannot reach a CUDA device ({error}); check the "
            "NVIDIA driver with nvidia-smi, or keep the arrays on the CPU") from None
    if count == 0:
        raise BackendError("CuPy is installed but no CUDA device is visible; "
                           "check CUDA_VISIBLE_DEVICES and nvidia-smi, or keep the arrays on the CPU")
    return cupy


def is_gpu_array(a):
    return type(a).__module__.startswith("cupy")


def to_gpu(a):
    """Copy a NumPy array to the current CUDA device (a CuPy array stays as it is)."""
    if a is None or is_gpu_array(a):
        return a
    return require_cupy().asarray(a)


def to_cpu(a):
    """Copy a CuPy array back to a NumPy array (a NumPy array stays as it is)."""
    if a is None or not is_gpu_array(a):
        return a
    return a.get()


def to_device(a, device):
    """Move an array to ``'cpu'`` or ``'gpu'``."""
    if device == "cpu":
        return to_cpu(a)
    if device == "gpu":
        return to_gpu(a)
    raise ValueError(f"unknown device {device!r}: use 'cpu' or 'gpu'")


def device_of(a):
    return "gpu" if is_gpu_array(a) else "cpu"
