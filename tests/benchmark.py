"""Speed benchmarks of minicnn against PyTorch on the CPU (not a pytest module).

Run from the repository root::

    python tests/benchmark.py                  # every section
    python tests/benchmark.py --only conv      # one section
    python tests/benchmark.py --threads 1      # single-threaded, both engines

Both engines run in this one process with the same thread count: PyTorch via
``torch.set_num_threads`` and NumPy's BLAS via ``threadpoolctl``. Each timing
is the median of several repeats after a warm-up, and every case first checks
that minicnn and PyTorch compute the same thing, so a fast wrong answer cannot
pass as a speed-up.

PyTorch is the timing reference and the numerical oracle; it is imported only
here (minicnn itself never imports it). Install it with
``pip install 'minicnn[oracle]'``.

Adding a section: write ``bench_<name>(args, torch)`` that prints its own table
and returns True when its correctness checks passed, then register it in
``SECTIONS``; ``--only <name>`` selects it.
"""
import argparse
import math
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

try:
    from threadpoolctl import threadpool_info, threadpool_limits
except ImportError:  # threadpoolctl comes with scikit-learn, a minicnn dependency
    threadpool_limits = None

# Time the minicnn of this checkout, even where another copy is installed.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from minicnn.layers import Conv2d  # noqa: E402

TOLERANCE = 1e-3
"""Largest max-relative difference (float32) accepted between minicnn and PyTorch."""


def import_torch():
    try:
        import torch
    except ImportError:
        sys.exit("benchmark.py needs PyTorch as its reference: pip install 'minicnn[oracle]'")
    return torch


def describe_machine(torch, threads):
    """One line on what is being compared, and a warning when the CPU is busy."""
    blas = [f"{i.get('internal_api')} {i.get('version')} ({i.get('architecture', '?')})"
            for i in threadpool_info() if i.get("user_api") == "blas"]
    print(f"numpy {np.__version__} with {', '.join(blas) or 'unknown BLAS'}; "
          f"torch {torch.__version__}; {threads} thread(s) each, {os.cpu_count()} CPU(s)")
    if hasattr(os, "getloadavg"):
        load = os.getloadavg()[0]
        if load > 0.5:
            print(f"warning: load average {load:.1f} before starting; other processes share "
                  "the CPU and the times (less so the ratios) will be noisy")
    print()


def time_pair(fa, fb, budget_s, rounds=3, least=3, most=20, settle_s=0.3):
    """Median wall times (ms) of ``fa()`` and ``fb()`` over ``rounds`` rounds.

    A round times a block of calls of ``fa`` and then a block of ``fb``. Blocks,
    not call-by-call alternation, and a pause of ``settle_s`` plus one untimed
    warm-up call before each block: after its last call OpenBLAS keeps its
    worker threads spinning for up to about 0.1 s (PyTorch's OpenMP threads
    for less), and an engine timed while the other's threads still spin shares
    the cores with them. Several rounds let a slow spell of the machine hit both.
    """
    start = time.perf_counter()
    fa()
    fb()
    once = time.perf_counter() - start
    repeats = max(least, min(most, int(budget_s / rounds / max(once, 1e-6))))
    times_a, times_b = [], []
    for _ in range(rounds):
        for fn, times in ((fa, times_a), (fb, times_b)):
            time.sleep(settle_s)
            fn()
            for _ in range(repeats):
                start = time.perf_counter()
                fn()
                times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times_a), statistics.median(times_b)


def max_rel_diff(a, b):
    """``max|a - b| / max|b|``: the worst entry's error on the scale of the reference."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    scale = np.abs(b).max()
    return float(np.abs(a - b).max() / scale) if scale > 0 else float(np.abs(a).max())


# -- section: single convolutions -------------------------------------------

CONV_SHAPES = [
    # (label, in_channels, out_channels, kernel, stride, padding, input size): ResNet-50's
    ("7x7/2 3->64 @224", 3, 64, 7, 2, 3, 224),   # conv1
    ("3x3 64->64 @56", 64, 64, 3, 1, 1, 56),     # conv2_x, middle of a bottleneck
    ("1x1 256->64 @56", 256, 64, 1, 1, 0, 56),   # conv2_x, bottleneck reduction
    ("3x3 512->512 @7", 512, 512, 3, 1, 1, 7),   # conv5_x, middle of a bottleneck
]
CONV_BATCHES = (1, 8)


def bench_conv(args, torch):
    """Conv2d forward + backward (input and weight gradients), minicnn vs PyTorch.

    Bias-free, as every convolution in ResNet-50.
    """
    F = torch.nn.functional
    rng = np.random.default_rng(0)
    print(f"Conv2d forward + backward (dx and dW), float32, {args.threads} thread(s); "
          f"median of repeats, ms")
    header = (f"{'shape':<20} {'batch':>5} {'minicnn ms':>11} {'torch ms':>10} {'ratio':>7}"
              f" {'max rel diff':>13}")
    print(header)
    print("-" * len(header))
    ratios, all_ok = [], True
    for label, cin, cout, k, s, p, size in CONV_SHAPES:
        for batch in CONV_BATCHES:
            layer = Conv2d(cin, cout, k, s, p, bias=False, rng=rng)
            x = rng.standard_normal((batch, cin, size, size)).astype(np.float32)
            ho = (size + 2 * p - k) // s + 1
            dout = rng.standard_normal((batch, cout, ho, ho)).astype(np.float32)

            tx = torch.from_numpy(x.copy()).requires_grad_(True)
            tw = torch.from_numpy(layer.params["weight"].copy()).requires_grad_(True)
            tdout = torch.from_numpy(dout.copy())

            def run_minicnn():
                out = layer.forward(x)
                dx = layer.backward(dout)
                return out, dx, layer.grads["weight"]

            def run_torch():
                tx.grad = tw.grad = None
                out = F.conv2d(tx, tw, None, s, p)
                out.backward(tdout)
                return out, tx.grad, tw.grad

            # Correctness first: output, input gradient and weight gradient.
            mine = run_minicnn()
            ref = [t.detach().numpy() for t in run_torch()]
            diff = max(max_rel_diff(a, b) for a, b in zip(mine, ref))
            ok = diff < TOLERANCE
            all_ok &= ok

            t_mine, t_torch = time_pair(run_minicnn, run_torch, args.budget)
            ratio = t_mine / t_torch
            ratios.append(ratio)
            print(f"{label:<20} {batch:>5} {t_mine:>11.2f} {t_torch:>10.2f} {ratio:>7.2f}"
                  f" {diff:>13.1e}{'' if ok else '  WRONG'}", flush=True)
    print("-" * len(header))
    geomean = math.exp(sum(math.log(r) for r in ratios) / len(ratios))
    print(f"geometric mean of the ratios (minicnn / torch): {geomean:.2f}")
    if not all_ok:
        print(f"FAILED: minicnn and PyTorch differ by more than {TOLERANCE:g} somewhere")
    return all_ok


SECTIONS = {
    "conv": bench_conv,
    # "resnet50": bench_resnet50,  # whole network, forward and forward + input gradient
}


def main(argv=None):
    parser = argparse.ArgumentParser(description="Time minicnn against PyTorch on the CPU.")
    parser.add_argument("--only", choices=sorted(SECTIONS), action="append",
                        help="run only this section (repeatable); default: all")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                        help="threads for both engines (default: os.cpu_count())")
    parser.add_argument("--budget", type=float, default=4.0,
                        help="seconds of timed repeats per case and both engines (default 4)")
    args = parser.parse_args(argv)
    if args.threads < 1:
        parser.error("--threads must be at least 1")
    if threadpool_limits is None:
        sys.exit("benchmark.py needs threadpoolctl to fix NumPy's thread count: "
                 "pip install threadpoolctl")
    torch = import_torch()
    torch.set_num_threads(args.threads)
    describe_machine(torch, args.threads)
    ok = True
    with threadpool_limits(limits=args.threads):
        for name in dict.fromkeys(args.only or SECTIONS):  # in order, each once
            ok &= SECTIONS[name](args, torch)
            print()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
