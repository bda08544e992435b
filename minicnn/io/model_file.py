"""Load and save whole models: architecture + weights + metadata in one file."""
from pathlib import Path

from ..models import build
from .errors import WeightsFormatError
from .hdf5 import read_weights, write_weights

DEFAULT_WEIGHTS = Path(__file__).resolve().parents[2] / "weights" / "digits_resnet8.h5"
"""The small model the project trains and ships (see weights/README.md)."""


def default_weights_path():
    if not DEFAULT_WEIGHTS.is_file():
        raise FileNotFoundError(
            f"the shipped default model {str(DEFAULT_WEIGHTS)!r} is missing; install minicnn from "
            "a source checkout (pip install -e .) or pass a weights file explicitly")
    return DEFAULT_WEIGHTS


def load(path=None, device="cpu"):
    """Build the network a minicnn weights file describes and load its weights.

    Returns the network in eval mode; ``net.metadata`` holds the file's labels,
    preprocessing and provenance. ``path=None`` loads the shipped default model.
    """
    path = default_weights_path() if path is None else Path(path)
    built = []

    def expected(metadata):  # the network's shapes, to check each dataset before reading it
        built.append(build(metadata["arch"], metadata.get("variant"),
                           num_classes=metadata["num_classes"]))
        return {name: value.shape for name, value in built[0].state_dict().items()}
    metadata, state = read_weights(path, expected)
    net = built[0]
    try:
        net.load_state_dict(state)
    except (KeyError, ValueError) as error:
        message = error.args[0] if error.args else error
        raise WeightsFormatError(f"{path}: {message}") from None
    net.metadata.update(metadata)
    net.metadata["path"] = str(path)
    net.eval()
    return net.to(device)


def save(net, path, **metadata):
    """Write ``net`` with its metadata (and any overrides given as keywords)."""
    from ..backend import to_cpu
    info = {**net.metadata, **metadata}
    info.pop("path", None)
    write_weights(path, {k: to_cpu(v) for k, v in net.state_dict().items()}, info)
    return path
