"""Download known pretrained weights, verify them, convert them, move them into place.

Every entry of :data:`REGISTRY` names the published file, its URL and its
checksum. A download goes to a hidden temporary file beside the destination;
only a file whose checksum matches is converted, and only a finished
conversion appears under its final name. Anything that fails (no network, an
HTTP error, a checksum mismatch, a conversion error) leaves nothing behind.

Checksums are written ``"sha256:<hex>"`` or ``"md5:<hex>"``. Where only the
first hex digits are published (torchvision's and akamaster's file names carry
the first 8 of the sha256, which is what torch.hub checks), the entry holds that
prefix and the check compares the prefix.
"""
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path

from tqdm.auto import tqdm

from .files import atomic_output, file_digest

KERAS1 = "https://github.com/fchollet/deep-learning-models/releases/download/v0.2/"
KERAS1_VGG = "https://github.com/fchollet/deep-learning-models/releases/download/v0.1/"
KERAS = "https://storage.googleapis.com/tensorflow/keras-applications/resnet/"
TORCHVISION = "https://download.pytorch.org/models/"
AKAMASTER = "https://github.com/akamaster/pytorch_resnet_cifar10/raw/master/pretrained_models/"

REGISTRY = {
    "keras1_resnet50": dict(
        url=KERAS1 + "resnet50_weights_tf_dim_ordering_tf_kernels.h5",
        checksum="md5:a7b3fe01876f51b976af0dea6bc144eb", arch="resnet50", variant="caffe",
        about="the original Caffe ResNet-50 of 'Deep Residual Learning', as saved by Keras 1"),
    "keras_resnet50": dict(
        url=KERAS + "resnet50_weights_tf_dim_ordering_tf_kernels.h5",
        checksum="md5:2cb95161c43110f7111970584f804107", arch="resnet50", variant="keras",
        about="keras.applications ResNet50"),
    "keras_resnet101": dict(
        url=KERAS + "resnet101_weights_tf_dim_ordering_tf_kernels.h5",
        checksum="md5:f1aeb4b969a6efcfb50fad2f0c20cfc5", arch="resnet101", variant="keras",
        about="keras.applications ResNet101"),
    "keras_resnet152": dict(
        url=KERAS + "resnet152_weights_tf_dim_ordering_tf_kernels.h5",
        checksum="md5:100835be76be38e30d865e96f2aaae62", arch="resnet152", variant="keras",
        about="keras.applications ResNet152"),
    "torchvision_resnet18": dict(
        url=TORCHVISION + "resnet18-f37072fd.pth", checksum="sha256:f37072fd",
        arch="resnet18", variant="torchvision", about="torchvision ResNet-18 (IMAGENET1K_V1)"),
    "torchvision_resnet34": dict(
        url=TORCHVISION + "resnet34-b627a593.pth", checksum="sha256:b627a593",
        arch="resnet34", variant="torchvision", about="torchvision ResNet-34 (IMAGENET1K_V1)"),
    "torchvision_resnet50": dict(
        url=TORCHVISION + "resnet50-0676ba61.pth", checksum="sha256:0676ba61",
        arch="resnet50", variant="torchvision", about="torchvision ResNet-50 (IMAGENET1K_V1)"),
    "torchvision_vgg16": dict(
        url=TORCHVISION + "vgg16-397923af.pth", checksum="sha256:397923af",
        arch="vgg16", variant="torchvision", about="torchvision VGG-16 (IMAGENET1K_V1)"),
    "torchvision_vgg19": dict(
        url=TORCHVISION + "vgg19-dcbb9e9d.pth", checksum="sha256:dcbb9e9d",
        arch="vgg19", variant="torchvision", about="torchvision VGG-19 (IMAGENET1K_V1)"),
    "keras_vgg16": dict(
        url=KERAS1_VGG + "vgg16_weights_tf_dim_ordering_tf_kernels.h5",
        checksum="md5:64373286793e3c8b2b4e3219cbf3544b", arch="vgg16", variant="keras",
        about="keras.applications VGG16: the Oxford VGG-16 weights ported to Keras"),
    "keras_vgg19": dict(
        url=KERAS1_VGG + "vgg19_weights_tf_dim_ordering_tf_kernels.h5",
        checksum="md5:cbe5617147190e668d6c5d5026f83318", arch="vgg19", variant="keras",
        about="keras.applications VGG19: the Oxford VGG-19 weights ported to Keras"),
    "cifar_resnet20": dict(
        url=AKAMASTER + "resnet20-12fca82f.th",
        checksum="sha256:12fca82f0bebc4135bf1f32f6e3710e61d5108578464b84fd6d7f5c1b04036c8",
        arch="cifar_resnet20", variant="cifar", about="akamaster CIFAR-10 ResNet-20"),
    "cifar_resnet32": dict(
        url=AKAMASTER + "resnet32-d509ac18.th",
        checksum="sha256:d509ac1820d7f25398913559d7e81a13229b1e7adc5648e3bfa5e22dc137f850",
        arch="cifar_resnet32", variant="cifar", about="akamaster CIFAR-10 ResNet-32"),
    "cifar_resnet44": dict(
        url=AKAMASTER + "resnet44-014dd654.th",
        checksum="sha256:014dd6541728a1c700b1642ab640e211dc6eb8ed507d70697458dc8f8a0ae2e4",
        arch="cifar_resnet44", variant="cifar", about="akamaster CIFAR-10 ResNet-44"),
    "cifar_resnet56": dict(
        url=AKAMASTER + "resnet56-4bfd9763.th",
        checksum="sha256:4bfd97631478d6b638d2764fd2baff3edb1d7d82252d54439343b6596b9b5367",
        arch="cifar_resnet56", variant="cifar", about="akamaster CIFAR-10 ResNet-56"),
    "cifar_resnet110": dict(
        url=AKAMASTER + "resnet110-1d1ed7c2.th", checksum="sha256:1d1ed7c2",
        arch="cifar_resnet110", variant="cifar", about="akamaster CIFAR-10 ResNet-110"),
    "imagenet_class_index": dict(
        url="https://storage.googleapis.com/download.tensorflow.org/data/imagenet_class_index.json",
        checksum="sha256:ecae206bed9024d38507c0c6a3f8c4dc079f465ad34e44c3ffd0ea5ddf6cfa50",
        arch=None, variant=None, about="the 1,000 ImageNet class names (Keras layout)"),
}


VGG19_DOWNLOADS = ("torchvision_vgg19", "keras_vgg19")
"""The VGG-19 downloads, in the order :func:`installed` prefers them."""


class DownloadError(RuntimeError):
    """A download could not be completed; nothing was left behind."""


def weights_home():
    """Where downloads go: $MINICNN_HOME, else ~/.cache/minicnn."""
    return Path(os.environ.get("MINICNN_HOME", Path.home() / ".cache" / "minicnn"))


def installed(*names, folder=None):
    """The converted file of the first of ``names`` already downloaded, else None.

    ``installed(*VGG19_DOWNLOADS)`` finds a VGG-19 that :func:`download` put
    in place (``<folder>/<name>.h5``, the folder being :func:`weights_home`
    unless given), so that a technique can use it by default when present.
    """
    folder = Path(folder) if folder is not None else weights_home()
    for name in names:
        if name not in REGISTRY or REGISTRY[name]["arch"] is None:
            raise KeyError(f"{name!r} is not a weights download; known: "
                           f"{', '.join(n for n, e in REGISTRY.items() if e['arch'])}")
        if (folder / f"{name}.h5").is_file():
            return folder / f"{name}.h5"
    return None


def verify_checksum(path, checksum):
    """Raise DownloadError unless ``path`` has the ``algorithm:hex`` checksum."""
    algorithm, _, expected = checksum.partition(":")
    actual = file_digest(path, algorithm)
    if not actual.startswith(expected.lower()):
        raise DownloadError(f"checksum mismatch for {Path(path).name}: expected {algorithm} "
                            f"{expected}{'...' if len(expected) < len(actual) else ''}, got "
                            f"{actual}; the file was deleted (a proxy page or a changed file?)")
    return actual


def fetch(url, destination, checksum, progress=True, timeout=60):
    """Download ``url`` to ``destination`` atomically, verifying the checksum."""
    with atomic_output(destination) as tmp:
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response, open(tmp, "wb") as out:
                total = int(response.headers.get("Content-Length") or 0) or None
                with tqdm(total=total, unit="B", unit_scale=True, disable=not progress,
                          desc=Path(destination).name, file=sys.stderr) as bar:
                    for block in iter(lambda: response.read(1 << 20), b""):
                        out.write(block)
                        bar.update(len(block))
                if total is not None and out.tell() != total:
                    raise DownloadError(f"{url}: connection closed after {out.tell()} of "
                                        f"{total} bytes; try again")
        except urllib.error.HTTPError as error:
            raise DownloadError(f"{url}: HTTP {error.code} {error.reason}") from None
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", error)
            raise DownloadError(f"cannot download {url} ({reason}); check the network "
                                "connection, or download the file by other means and run "
                                "minicnn weights convert on it") from None
        digest = verify_checksum(tmp, checksum)
    return digest


def download(name, folder=None, registry=None, progress=True):
    """Download, verify and convert a registry entry; return the final path.

    Weights end up as ``<folder>/<name>.h5`` in minicnn's format; a JSON file
    such as the class index is kept as it is.
    """
    registry = REGISTRY if registry is None else registry
    if name not in registry:
        raise KeyError(f"unknown download {name!r}; known: {', '.join(sorted(registry))}")
    entry = registry[name]
    folder = Path(folder) if folder is not None else weights_home()
    folder.mkdir(parents=True, exist_ok=True)
    source_name = entry["url"].rsplit("/", 1)[-1]
    if entry.get("arch") is None:
        final = folder / source_name
        fetch(entry["url"], final, entry["checksum"], progress)
        return final
    from .convert import convert  # here, not at the top: convert imports this module
    final = folder / f"{name}.h5"
    raw = folder / f".{source_name}.download"
    try:
        digest = fetch(entry["url"], raw, entry["checksum"], progress)
        source = {"url": entry["url"], "file": source_name, "sha256": file_digest(raw),
                  "checksum_verified": f"{entry['checksum'].partition(':')[0]}:{digest}"}
        convert(raw, final, arch=entry["arch"], variant=entry["variant"], source=source)
    finally:
        if raw.exists():
            raw.unlink()
    return final

