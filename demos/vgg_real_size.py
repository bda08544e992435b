"""Real-size VGG-16/19 files in every published layout, converted and checked against torch.

The test suite converts narrow VGGs (tests/test_vgg.py), because a real VGG-16
file is 528 MiB. This script does the same at the real sizes: a torch VGG with
random weights (tests/torch_vgg.py) is saved as a torchvision zip, a Keras
``tf_dim_ordering_tf_kernels`` HDF5 (Keras 1 weight names, fc1 in channels-last
order) and a V1 caffemodel as in 2014 (tests/foreign_files.py); each is
converted with the architecture inferred, loaded, and run on one 224 x 224
image beside torch. It prints the logits' largest error relative to the
largest logit, and the time of each step. Needs torch and ~4 GiB of memory::

    python demos/vgg_real_size.py               # VGG-16 and VGG-19
    python demos/vgg_real_size.py --depth 19 --layout keras1
"""
import argparse
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
import minicnn  # noqa: E402
from minicnn.io.convert import convert  # noqa: E402
from foreign_files import (vgg_caffe_layout, vgg_keras_layout, write_caffemodel_v1,  # noqa: E402
                           write_keras_layers)

LAYOUTS = ("torchvision-zip", "keras1", "caffemodel-v1")


def write(torch, layout, model, depth, path):
    if layout == "torchvision-zip":
        torch.save(model.state_dict(), path)
        return
    state = {k: v.numpy() for k, v in model.state_dict().items()}
    if layout == "keras1":
        with h5py.File(path, "w") as f:
            write_keras_layers(f, vgg_keras_layout(state, depth, "keras1"), "keras1")
    else:
        write_caffemodel_v1(path, vgg_caffe_layout(state, depth))


def timed(step, times, name):
    start = time.perf_counter()
    result = step()
    times[name] = time.perf_counter() - start
    return result


def check(torch, depth, layouts, folder):
    from torch_resnets import randomize_torch
    from torch_vgg import TorchVGG
    model = randomize_torch(TorchVGG(depth), seed=depth)
    x = np.random.default_rng(depth).standard_normal((1, 3, 224, 224)).astype(np.float32)
    with torch.no_grad():
        start = time.perf_counter()
        reference = model(torch.from_numpy(x)).numpy()
        torch_seconds = time.perf_counter() - start
    worst = 0.0
    for layout in layouts:
        times = {}
        source, out = folder / f"vgg{depth}.{layout}", folder / f"vgg{depth}.{layout}.h5"
        timed(lambda: write(torch, layout, model, depth, source), times, "write")
        meta = timed(lambda: convert(source, out), times, "convert")
        net = timed(lambda: minicnn.load(out), times, "load")
        logits = timed(lambda: net.forward(x, cache=False), times, "forward")
        error = float(np.abs(logits - reference).max() / np.abs(reference).max())
        worst = max(worst, error)
        print(f"vgg{depth:<3} {layout:<16} {meta['arch']} ({meta['variant']:<11}) "
              f"{source.stat().st_size / 2**20:6.0f} MiB  max error / max |logit| {error:.1e}  "
              + "  ".join(f"{k} {v:5.2f} s" for k, v in times.items())
              + f"  (torch forward {torch_seconds:.2f} s)", flush=True)
        source.unlink()
        out.unlink()
        del net
    return worst


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--depth", type=int, nargs="+", default=[16, 19], choices=[16, 19])
    parser.add_argument("--layout", nargs="+", default=list(LAYOUTS), choices=LAYOUTS)
    args = parser.parse_args()
    import torch
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as folder:
        worst = max(check(torch, depth, args.layout, Path(folder)) for depth in args.depth)
    print(f"largest relative logit error: {worst:.1e} ({'within' if worst < 1e-4 else 'ABOVE'} "
          "1e-4)")
    return 0 if worst < 1e-4 else 1


if __name__ == "__main__":
    sys.exit(main())
