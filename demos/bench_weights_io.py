"""Time the weights readers before and after the hostile-files hardening.

    python demos/bench_weights_io.py --before /tmp/before_io [--repeat 5]

``--before`` is a copy of the ``minicnn`` package from before the change (e.g.
``git worktree add /tmp/before <commit>``). Each tree runs in its own
subprocess, on the same files:

* own-format load of a ResNet-50 (``minicnn.load``: build, read, check), the
  file written by that tree's own writer (the new one adds fletcher32 and the
  HDF5 1.8 layout) and, for the new tree, also the old file;
* ``convert`` of a ResNet-50 caffemodel with packed floats (KaimingHe's layout);
* ``read_caffemodel`` of a ResNet-18 caffemodel with unpacked floats;
* ``read_torch_checkpoint`` of a ResNet-50 ``torch.save`` zip file.

Prints, per measurement, the median of ``--repeat`` runs (the best of
``--rounds`` alternating rounds per tree) and the after/before ratio.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, statistics, sys, time
from pathlib import Path
import minicnn
from minicnn.io.model_file import load, save
from minicnn.io.convert import convert
from minicnn.io.caffemodel import read_caffemodel
from minicnn.io.torch_checkpoint import read_torch_checkpoint
folder, repeat, tag = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]

def median(function):
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)
own = folder / f"resnet50_{tag}.h5"
save(minicnn.build("resnet50", rng=0), own)
out = {"load_own_resnet50": median(lambda: load(own))}
if tag == "after":
    out["load_old_file_resnet50"] = median(lambda: load(folder / "resnet50_before.h5"))
target = folder / f"converted_{tag}.h5"
out["convert_caffemodel_resnet50"] = median(lambda: convert(folder / "resnet50.caffemodel",
                                                            target, arch="resnet50"))
start = time.perf_counter()
read_caffemodel(folder / "resnet18_unpacked.caffemodel")
out["read_unpacked_caffemodel_resnet18"] = time.perf_counter() - start
out["read_torch_zip_resnet50"] = median(lambda: read_torch_checkpoint(folder / "resnet50.pth"))
print(json.dumps(out))
"""


def make_files(folder):
    sys.path.insert(0, str(ROOT / "tests"))
    from foreign_files import caffe_layout, layer, net
    import torch
    from torch_resnets import TorchResNet, randomize_torch
    for depth, dims, data, name in ((50, "packed", "packed", "resnet50.caffemodel"),
                                    (18, "packed", "unpacked", "resnet18_unpacked.caffemodel")):
        model = TorchResNet(depth)
        randomize_torch(model, seed=0)
        state = {k: v.numpy() for k, v in model.state_dict().items()
                 if not k.endswith("num_batches_tracked")}
        state["conv1.bias"] = state["bn1.bias"] * 0  # the released Caffe ResNets' conv1 has one
        layers = caffe_layout(state, depth, factor=1.0)
        (folder / name).write_bytes(net(*(layer(n, kind, blobs, dims=dims, data=data)
                                          for n, kind, blobs in layers)))
        if depth == 50:
            torch.save(model.state_dict(), folder / "resnet50.pth")


def run(tree, folder, repeat, tag):
    env = {**os.environ, "PYTHONPATH": str(tree)}
    result = subprocess.run([sys.executable, "-c", CHILD, str(folder), str(repeat), tag],
                            env=env, capture_output=True, text=True, cwd=folder)
    if result.returncode:
        raise RuntimeError(result.stderr)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--before", required=True, help="folder holding the old minicnn package")
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per measurement")
    parser.add_argument("--rounds", type=int, default=2, help="alternating before/after rounds")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        make_files(folder)
        rounds = [(run(args.before, folder, args.repeat, "before"),
                   run(ROOT, folder, args.repeat, "after")) for _ in range(args.rounds)]
    # the best round of each tree: the machine is shared, so slow rounds are other load
    before = {key: min(r[0][key] for r in rounds) for key in rounds[0][0]}
    after = {key: min(r[1][key] for r in rounds) for key in rounds[0][1]}
    print(f"{'measurement':<36} {'before s':>9} {'after s':>9} {'after/before':>13}")
    for key, value in after.items():
        old = before.get(key, before.get(key.replace("old_file", "own")))
        print(f"{key:<36} {old:>9.3f} {value:>9.3f} {value / old:>13.2f}")


if __name__ == "__main__":
    main()
