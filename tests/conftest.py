"""Shared test machinery: the CPU/GPU parametrization and hypothesis settings.

Tests that should also run on CuPy take the ``dev`` fixture (or parametrize over
``xp_params`` themselves). The CuPy variant carries ``pytest.mark.gpu`` and is
skipped, with the reason shown by ``pytest -rs``, when
``minicnn.backend.gpu_available()`` is False. Any other test marked ``gpu`` is
skipped the same way, so ``pytest -m "not gpu"`` and ``pytest -m gpu`` both work.
"""
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

from minicnn import backend

GPU_AVAILABLE = backend.gpu_available()
NO_GPU_REASON = ("no CUDA device: minicnn.backend.gpu_available() is False (CuPy is not "
                 "installed or sees no GPU); install it with pip install 'minicnn[cuda]'")

# One fixed, derandomized profile: CI runs the same examples every time and
# writes no example database into the repository.
settings.register_profile("minicnn", derandomize=True, deadline=None, database=None,
                          print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("minicnn")

xp_params = [
    pytest.param("cpu", id="numpy"),
    pytest.param("gpu", id="cupy", marks=pytest.mark.gpu),
]
"""Parametrize over these (or take the ``dev`` fixture) to run on NumPy and CuPy."""


def pytest_collection_modifyitems(config, items):
    if GPU_AVAILABLE:
        return
    skip_gpu = pytest.mark.skip(reason=NO_GPU_REASON)
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


class Device:
    """Where a test runs: moves arrays and layers there and back."""

    def __init__(self, name):
        if name not in ("cpu", "gpu"):
            raise ValueError(name)
        self.name = name

    def __repr__(self):
        return f"Device({self.name!r})"

    @property
    def xp(self):
        if self.name == "gpu":
            return backend.require_cupy()
        return np

    def array(self, a):
        """A NumPy array (or anything array-like) on this device."""
        a = np.asarray(a)
        return backend.to_gpu(a) if self.name == "gpu" else a

    def layer(self, layer):
        """Move a layer or a network here (``layer.to('gpu')``); returns it."""
        return layer.to(self.name)

    @staticmethod
    def numpy(a):
        """Back to NumPy, whatever the device."""
        return backend.to_cpu(a)


def to_device(obj, device):
    """Move an array (``minicnn.backend.to_gpu``) or a layer/network (``.to``)."""
    device = Device(device) if isinstance(device, str) else device
    if hasattr(obj, "to") and not hasattr(obj, "shape"):
        return device.layer(obj)
    return device.array(obj)


@pytest.fixture(params=xp_params)
def dev(request):
    """A :class:`Device`: NumPy always, CuPy under the ``gpu`` marker."""
    if request.param == "gpu" and not GPU_AVAILABLE:
        pytest.skip(NO_GPU_REASON)
    return Device(request.param)


@pytest.fixture
def cpu():
    return Device("cpu")


CIFAR_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10"
"""The real CIFAR-10 data (../shared/data/cifar10): akamaster checkpoints, test JPEGs."""
CIFAR_CHECKPOINTS = {20: "resnet20-12fca82f.th", 32: "resnet32-d509ac18.th",
                     44: "resnet44-014dd654.th", 56: "resnet56-4bfd9763.th"}


@pytest.fixture(scope="session")
def cifar_resnet_file(tmp_path_factory):
    """``cifar_resnet_file(depth)``: the akamaster CIFAR-10 ResNet of that depth converted
    to a minicnn file, once per test session (every test that needs one shares it);
    skips with a reason when ../shared/data is absent."""
    made = {}

    def converted(depth):
        if depth not in made:
            source = CIFAR_DATA / CIFAR_CHECKPOINTS[depth]
            if not source.is_file():
                pytest.skip(f"real CIFAR-10 checkpoint not found at {source}")
            from minicnn.io.convert import convert
            path = tmp_path_factory.mktemp("cifar_resnets") / f"cifar_resnet{depth}.h5"
            convert(source, path)
            made[depth] = path
        return made[depth]
    return converted
