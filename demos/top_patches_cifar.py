"""Maximally activating patches over all 10,000 CIFAR-10 test JPEGs with ResNet-56.

Converts the akamaster ResNet-56 checkpoint from ../shared/data (no torch),
streams the test folder through it batch by batch and keeps each channel's k
strongest activations at --layer. Prints the time, the peak of memory
allocated meanwhile (tracemalloc: NumPy's buffers included), the process's
peak resident size, and, for scale, one batch's forward pass and what keeping
every activation of the layer would take. ``--figure PNG`` draws the patches of
a few channels with their guided-backprop projections.

    python demos/top_patches_cifar.py --layer res3 --figure patches.png
"""
import argparse
import resource
import tempfile
import time
import tracemalloc
from pathlib import Path


from minicnn.datasets import image_folder
from minicnn.io.convert import convert
from minicnn.io.model_file import load
from minicnn.techniques import patch_projections, top_patches

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10"


def peak_of(function):
    tracemalloc.start()
    try:
        return function(), tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=DATA, type=Path, help=f"default {DATA}")
    parser.add_argument("--layer", default="res3")
    parser.add_argument("--k", type=int, default=9)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--limit", type=int, default=None, help="first N images only")
    parser.add_argument("--figure", type=Path, help="draw channels --channels to this PNG")
    parser.add_argument("--channels", type=int, nargs="+", default=[0, 1, 2, 3, 4, 5])
    args = parser.parse_args()
    if not (args.data / "test").is_dir():
        raise SystemExit(f"CIFAR-10 test images not found in {args.data / 'test'}")

    with tempfile.TemporaryDirectory() as folder:
        weights = Path(folder) / "cifar_resnet56.h5"
        convert(args.data / "resnet56-4bfd9763.th", weights)
        net = load(weights)
    data = image_folder(args.data / "test", net.metadata["preprocessing"], net.metadata["labels"])
    if args.limit is not None:
        data = data.subset(range(min(args.limit, len(data))))
    batch = data.images(range(args.batch_size))
    top_patches(net, batch, args.layer, progress=False)  # warm up the work buffers
    activation, forward_peak = peak_of(
        lambda: net.forward(batch, stop_at=args.layer, cache=False))
    every = len(data) * activation.nbytes // args.batch_size

    start, cpu_start = time.perf_counter(), time.process_time()
    patches, peak = peak_of(lambda: top_patches(net, data, args.layer, k=args.k,
                                                batch_size=args.batch_size))
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux

    mb = 1e6
    print(f"{len(data)} images, layer {args.layer} {tuple(activation.shape[1:])}, k = {args.k}, "
          f"batch {args.batch_size}: {seconds:.1f} s wall, {cpu_seconds:.1f} s CPU "
          f"({len(data) / seconds:.0f} images/s)")
    print(f"peak allocated during top_patches: {peak / mb:.1f} MB (tracemalloc)")
    print(f"  one batch's forward pass alone:   {forward_peak / mb:.1f} MB")
    print(f"  one batch's activations at layer:  {activation.nbytes / mb:.1f} MB")
    print(f"  every activation of the layer:   {every / mb:.1f} MB (never held)")
    print(f"peak resident size of the process: {rss:.0f} MiB")
    classes = data.classes
    for channel in args.channels:
        best = patches[channel][:5]
        print(f"channel {channel:3d}: " + ", ".join(
            f"{classes[data.labels[p.image]]} {p.value:.2f}" for p in best))
    if args.figure:
        from minicnn.plots import save
        from minicnn.plots.features import top_patches_figure
        chosen = {c: patches[c][:6] for c in args.channels}
        projections = patch_projections(net, data, args.layer, chosen)
        fig = top_patches_figure(chosen, data.pixels, projections, net.metadata["preprocessing"],
                                 layer=f"ResNet-56 {args.layer}, {len(data)} CIFAR-10 test images")
        print(f"wrote {save(fig, args.figure)}")


if __name__ == "__main__":
    main()
