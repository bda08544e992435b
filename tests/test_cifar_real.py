"""The real akamaster CIFAR-10 ResNets on the 10,000 real CIFAR-10 test images.

Needs ../shared/data (see its README); skipped with a reason when absent. The
checkpoints are converted with minicnn (no torch), run on every test JPEG, and
compared with PyTorch running the same checkpoint: the predictions must agree
image by image and the top-1 accuracy must be the published 81.03 % (ResNet-20)
and 83.20 % (ResNet-56) for these JPEG re-encodings.
"""
from pathlib import Path

import numpy as np
import pytest

from minicnn.images import load_image, preprocess
from minicnn.io.convert import convert
from minicnn.io.model_file import load
from minicnn.train import predict

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10"
pytestmark = pytest.mark.skipif(not (DATA / "test").is_dir(),
                                reason=f"real CIFAR-10 data not found at {DATA}")
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
           "truck"]


@pytest.fixture(scope="module")
def test_set():
    paths, labels = [], []
    for index, name in enumerate(CLASSES):
        files = sorted((DATA / "test" / name).glob("*.jpg"))
        paths += files
        labels += [index] * len(files)
    pixels = np.stack([load_image(p) for p in paths])
    return pixels, np.array(labels)


@pytest.mark.parametrize("depth, checkpoint, expected", [
    (20, "resnet20-12fca82f.th", 0.8103),
    (56, "resnet56-4bfd9763.th", 0.8320),
])
def test_converted_checkpoint_matches_pytorch(depth, checkpoint, expected, test_set, tmp_path):
    pixels, labels = test_set
    assert len(labels) == 10000
    out = tmp_path / f"cifar_resnet{depth}.h5"
    meta = convert(DATA / checkpoint, out)
    assert meta["arch"] == f"cifar_resnet{depth}" and meta["variant"] == "cifar"
    net = load(out)
    assert net.metadata["labels"] == CLASSES
    x = np.stack([preprocess(p, net.metadata["preprocessing"]) for p in pixels])
    logits = predict(net, x, batch_size=250)
    ours = logits.argmax(axis=1)
    accuracy = float((ours == labels).mean())
    assert accuracy == pytest.approx(expected, abs=1e-9)

    torch = pytest.importorskip("torch")
    from torch_resnets import TorchCifarResNet
    raw = torch.load(DATA / checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    state = {k.removeprefix("module.").replace("linear.", "fc."): v for k, v in raw.items()}
    model = TorchCifarResNet(depth)
    model.load_state_dict(state)
    model.eval()
    with torch.no_grad():
        reference = model(torch.from_numpy(x)).numpy()
    np.testing.assert_array_equal(ours, reference.argmax(axis=1))
    np.testing.assert_allclose(logits, reference, rtol=1e-4, atol=1e-4 * np.abs(reference).max())
