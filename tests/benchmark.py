"""Speed benchmarks of minicnn against PyTorch on the CPU (not a pytest module).

Run from the repository root::

    python tests/benchmark.py                  # every section
    python tests/benchmark.py --only conv      # one section
    python tests/benchmark.py --threads 1      # single-threaded, both engines

Both engines run in this one process with the same thread count: PyTorch via
``torch.set_num_threads``, NumPy's BLAS via ``threadpoolctl`` and minicnn's own
threads via ``minicnn.set_num_threads``. Each timing
is the median of several repeats after a warm-up, and every case first checks
that minicnn and PyTorch compute the same thing, so a fast wrong answer cannot
pass as a speed-up.

The ``resnet50`` and ``small`` tables also say how far down minicnn could go on
this machine: ``floor`` is the time its multiply-adds would take at the BLAS's
best rate (:func:`blas_peak_gflops`, :func:`pass_multiply_adds`) and
``products`` the time its matrix products really take in the pass, split
perfectly over the cores (:func:`products_ms`), each over PyTorch's time.

PyTorch is the timing reference and the numerical oracle; it is imported only
here (minicnn itself never imports it). Install it with
``pip install 'minicnn[oracle]'``.

Adding a section: write ``bench_<name>(args, torch)`` that prints its own table
and returns True when its correctness checks passed, then register it in
``SECTIONS``; ``--only <name>`` selects it.
"""
import argparse
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

# Time the minicnn of this checkout, even where another copy is installed; the torch
# references (torch_resnets, torch_saliency, optimize_oracle) live beside this file.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from minicnn.layers import Conv2d  # noqa: E402
from minicnn.layers.threads import get_num_threads, set_num_threads  # noqa: E402

TOLERANCE = 1e-3
"""Largest max-relative difference (float32) accepted between minicnn and PyTorch."""


GRADIENT_TOLERANCE = 1e-2
"""Whole-array error accepted on ResNet-50's float32 input gradient: a few ReLU
inputs within rounding of zero fall on different sides in the two engines and
switch their masks (in float64 the two agree to 1e-15; tests/test_models.py)."""


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
    if any(i.get("architecture") == "Haswell" for i in threadpool_info()) and _has_avx512():
        print("note: NumPy's OpenBLAS runs its AVX2 (Haswell) kernels on this AVX-512 CPU; "
              "OPENBLAS_CORETYPE=SkylakeX in the environment made its matrix products "
              "1.5-1.8x faster on a 2-core AMD EPYC")
    print()


def _has_avx512():
    try:
        with open("/proc/cpuinfo") as f:
            return " avx512f " in f.read()
    except OSError:
        return False


CLOCK = time.perf_counter
"""What time_pair reads: wall time, or with ``--cpu-time`` the process's CPU time
(``time.process_time``), which a machine busy with other work inflates far less;
with one thread it is the work each engine does."""


def time_pair(fa, fb, budget_s, rounds=3, least=3, most=20, settle_s=0.3):
    """Median times (ms, :data:`CLOCK`) of ``fa()`` and ``fb()`` over ``rounds`` rounds.

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
                start = CLOCK()
                fn()
                times.append((CLOCK() - start) * 1e3)
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
    ("3x3 128->128 @28", 128, 128, 3, 1, 1, 28),  # conv3_x
    ("3x3 256->256 @14", 256, 256, 3, 1, 1, 14),  # conv4_x
    ("3x3 512->512 @7", 512, 512, 3, 1, 1, 7),   # conv5_x, middle of a bottleneck
    # and the CIFAR ResNets' three stages
    ("3x3 16->16 @32", 16, 16, 3, 1, 1, 32),
    ("3x3 32->32 @16", 32, 32, 3, 1, 1, 16),
    ("3x3 64->64 @8", 64, 64, 3, 1, 1, 8),
]
CONV_BATCHES = (1, 8, 32)


def bench_conv(args, torch):
    """Conv2d forward + backward (input and weight gradients), minicnn vs PyTorch.

    Bias-free, as every convolution in ResNet-50. Where a stride-1 3x3 layer's
    forward pass and input gradient go through Winograd (``path``), ``wide ms``
    times the same layer with Winograd switched off
    (:data:`minicnn.layers.winograd.ENABLED`); its weight gradient goes through
    Winograd too where the batch has twice the blocks
    (``use_winograd(..., weight_grad=True)``), else through the wide lowering.
    """
    from minicnn.layers import winograd
    from minicnn.layers.winograd import use_winograd
    F = torch.nn.functional
    rng = np.random.default_rng(0)
    print(f"Conv2d forward + backward (dx and dW), float32, {args.threads} thread(s); "
          f"median of repeats, ms")
    header = (f"{'shape':<20} {'batch':>5} {'path':>8} {'minicnn ms':>11} {'wide ms':>8}"
              f" {'torch ms':>10} {'ratio':>7} {'max rel diff':>13}")
    print(header)
    print("-" * len(header))
    ratios, all_ok = [], True
    for label, cin, cout, k, s, p, size in CONV_SHAPES:
        for batch in CONV_BATCHES:
            if batch > 8 and size > 32:
                continue  # ResNet-50's early layers at batch 32: long, and nothing new
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
            fast = use_winograd((k, k), (s, s), (cin, cout), (ho, ho), batch)
            wide = ""
            if fast:
                winograd.ENABLED = False
                try:
                    wide = f"{time_pair(run_minicnn, run_torch, args.budget)[0]:.2f}"
                finally:
                    winograd.ENABLED = True
            print(f"{label:<20} {batch:>5} {'winograd' if fast else 'wide':>8} {t_mine:>11.2f}"
                  f" {wide:>8} {t_torch:>10.2f} {ratio:>7.2f}"
                  f" {diff:>13.1e}{'' if ok else '  WRONG'}", flush=True)
    print("-" * len(header))
    geomean = statistics.geometric_mean(ratios)
    print(f"geometric mean of the ratios (minicnn / torch): {geomean:.2f}")
    if not all_ok:
        print(f"FAILED: minicnn and PyTorch differ by more than {TOLERANCE:g} somewhere")
    return all_ok


# -- section: ResNet-50 ---------------------------------------------------------

def _rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def memory_probe(spec):
    """Run one pass in this (fresh) process and print its peak memory in MiB.

    ``spec`` is ``engine:pass:batch``. The peak is the highest resident set
    minus the resident set just before the pass, after
    the model is built, sampled every millisecond during the pass: the
    activations, caches and gradients of that pass.
    """
    import gc
    import threading
    engine, kind, batch = spec.split(":")
    x = np.random.default_rng(0).standard_normal((int(batch), 3, 224, 224)).astype(np.float32)
    onehot = np.zeros((int(batch), 1000), np.float32)
    onehot[:, 281] = 1.0
    if engine == "minicnn":
        from minicnn.models import resnet
        net = resnet(50, "torchvision", rng=0).eval()
        run = {"forward": lambda: net.forward(x, cache=False),
               "backward": lambda: (net.forward(x), net.backward(onehot, param_grads=False))}
    else:
        torch = import_torch()
        torch.set_num_threads(1)
        from torch_resnets import TorchResNet
        model = TorchResNet(50, "torchvision").eval()
        model.requires_grad_(False)
        tx = torch.from_numpy(x)

        def backward():
            leaf = tx.clone().requires_grad_(True)
            model(leaf).backward(torch.from_numpy(onehot))

        def forward():
            with torch.no_grad():
                model(tx)

        run = {"forward": forward, "backward": backward}
    gc.collect()
    try:  # hand memory that set-up freed back to the system, so that the pass cannot
        import ctypes  # reuse it unseen and the growth of the resident set is all its own
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    before = peak = _rss_bytes()
    done = threading.Event()

    def sample():  # the high-water mark of getrusage would include the model's set-up
        nonlocal peak
        while not done.wait(0.001):
            peak = max(peak, _rss_bytes())

    sampler = threading.Thread(target=sample)
    sampler.start()
    run[kind]()
    done.set()
    sampler.join()
    peak = max(peak, _rss_bytes())
    print(f"{(peak - before) / 2**20:.0f}")


def peak_memory_mib(engine, kind, batch):
    """Peak memory of one pass, measured in a fresh subprocess (see memory_probe)."""
    import subprocess
    result = subprocess.run([sys.executable, __file__, "--probe", f"{engine}:{kind}:{batch}"],
                            capture_output=True, text=True, check=True)
    return float(result.stdout.strip().splitlines()[-1])


def rel_norm_diff(a, b):
    """``||a - b|| / ||b||``: a whole-array error that a few entries near a ReLU kink,
    landing on different sides in float32, do not dominate."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


# -- the arithmetic floor ------------------------------------------------------

def blas_peak_gflops():
    """The fastest rate NumPy's BLAS reaches here, GFLOP/s: float32 square products
    of 1024 and 2048, best of three each, under the thread limit in force."""
    rng = np.random.default_rng(0)
    best = 0.0
    for n in (1024, 2048):
        a = rng.standard_normal((n, n)).astype(np.float32)
        out = np.empty_like(a)
        np.matmul(a, a, out=out)
        for _ in range(3):
            start = time.perf_counter()
            np.matmul(a, a, out=out)
            best = max(best, 2 * n ** 3 / (time.perf_counter() - start) / 1e9)
    return best


def conv_multiply_adds(layer, x_shape, part):
    """Multiply-adds that ``part`` ("forward", "input" or "weight" gradient) of the
    Conv2d ``layer`` needs on an input of ``x_shape``, with the algorithm minicnn
    picks for it, counted at its best: Winograd's 16 products per 2x2 block and
    channel pair on the blocks of real output only (no garbage tiles), every other
    lowering as the direct sum ``N O Ho Wo C kh kw`` (no wrapped columns)."""
    from minicnn.layers.conv import dx_is_correlation, output_size
    from minicnn.layers.winograd import use_winograd
    n, c, h, w = x_shape
    o, (kh, kw), stride, (ph, pw) = layer.out_channels, layer.kernel_size, layer.stride, \
        layer.padding
    ho, wo = output_size(h, kh, stride[0], ph), output_size(w, kw, stride[1], pw)
    direct = n * o * ho * wo * c * kh * kw

    def winograd(out_h, out_w):
        return 16 * o * c * n * ((out_h + 1) // 2) * ((out_w + 1) // 2)

    if part == "forward" and use_winograd((kh, kw), stride, (c, o), (ho, wo), n):
        return winograd(ho, wo)
    if (part == "input" and dx_is_correlation((kh, kw), stride, (ph, pw))
            and use_winograd((kh, kw), (1, 1), (o, c), (h, w), n)):
        return winograd(h, w)
    if part == "weight" and use_winograd((kh, kw), stride, (c, o), (ho, wo), n,
                                         weight_grad=True):
        return winograd(ho, wo)
    return direct


def pass_multiply_adds(net, x, backward=False, input_grad=True, param_grads=False):
    """Multiply-adds of the convolutions and fully connected layers of one pass of
    ``net`` on a batch shaped like ``x``: the forward pass, and with ``backward`` the
    backward pass too (each layer's input gradient, but not the first child's when
    ``input_grad`` is False, as :meth:`~minicnn.network.Network.backward` skips it;
    the weight gradients when ``param_grads``)."""
    from minicnn.layers import Conv2d, Linear
    layers = list(net.layers())
    modes = [layer.training for layer in layers]
    net.eval()  # training mode would move the running statistics towards the probe's
    try:
        net.forward(np.zeros(x.shape, dtype=x.dtype))  # Conv2d and Linear keep their inputs
        shapes = [layer.cache.shape if isinstance(layer, (Conv2d, Linear)) else None
                  for layer in layers]
    finally:
        for layer, training in zip(layers, modes):
            layer.training = training
            layer.cache = None
    first = next(iter(net.children.values()))
    total = 0
    for layer, shape in zip(layers, shapes):
        if shape is None:
            continue
        parts = ["forward"]
        if backward:
            parts += ["input"] if input_grad or layer is not first else []
            parts += ["weight"] if param_grads else []
        for part in parts:
            if isinstance(layer, Conv2d):
                total += conv_multiply_adds(layer, shape, part)
            else:
                total += shape[0] * layer.in_features * layer.out_features
    return total


def floor_ms(multiply_adds, peak_gflops):
    """The time ``multiply_adds`` take at ``peak_gflops``: no engine doing that
    arithmetic on this BLAS runs faster, whatever else it does for free."""
    return 2 * multiply_adds / peak_gflops / 1e6


def products_ms(fn, threads, repeats=3):
    """The time the matrix products inside ``fn()`` take (every ``numpy.matmul`` call,
    which is how minicnn's layers multiply), run on one thread and divided by
    ``threads``: what they would cost split perfectly over the cores. Median of
    ``repeats`` calls after a warm-up."""
    spent = [0.0]

    def timed(*args, **kwargs):
        start = time.perf_counter()
        result = matmul(*args, **kwargs)
        spent[0] += time.perf_counter() - start
        return result

    matmul, before = np.matmul, get_num_threads()
    set_num_threads(1)
    times = []
    try:
        with threadpool_limits(limits=1):
            fn()
            np.matmul = timed
            for _ in range(repeats):
                spent[0] = 0.0
                fn()
                times.append(spent[0] * 1e3 / threads)
    finally:
        np.matmul = matmul
        set_num_threads(before)
    return statistics.median(times)


FLOOR_NOTE = ("floor: the time minicnn's multiply-adds alone would take at NumPy's best BLAS "
              "rate here ({peak:.0f} GFLOP/s), over torch's time; products: the time "
              "minicnn's matrix products take in the pass, timed on one thread and divided "
              "by the thread count, over torch's time")


def _forward_and_input_gradient(torch, net, model, x, onehot):
    """The passes the resnet50 and small sections time on the batch ``x``, minicnn's
    ``net`` and torch's ``model`` with the same weights: (minicnn forward, torch
    forward, minicnn forward + input gradient, torch's), the gradient that of the
    logits weighted by ``onehot``, without parameter gradients."""
    tx = torch.from_numpy(x.copy())

    def mine_forward():  # inference, as torch.no_grad: nothing kept for backward
        return net.forward(x, cache=False)

    def torch_forward():
        with torch.no_grad():
            return model(tx)

    def mine_backward():
        net.forward(x)
        return net.backward(onehot, param_grads=False)

    def torch_backward():
        leaf = tx.clone().requires_grad_(True)
        model(leaf).backward(torch.from_numpy(onehot))
        return leaf.grad

    return mine_forward, torch_forward, mine_backward, torch_backward


def _random_resnet50():
    """ResNet-50 (torchvision variant, random weights from seed 0) in minicnn and in
    torch with the same weights, both in eval mode, torch's parameters frozen."""
    from torch_resnets import TorchResNet, load_minicnn_state
    from minicnn.models import resnet
    net = resnet(50, "torchvision", rng=0).eval()
    model = load_minicnn_state(TorchResNet(50, "torchvision"), net.state_dict(), 50).eval()
    model.requires_grad_(False)
    return net, model


def bench_resnet50(args, torch):
    """ResNet-50 (torchvision variant) at 224x224: forward, and forward + input gradient.

    The backward pass is the one visualizations need: from one class score to
    the image, without parameter gradients. Both engines run the same weights.
    """
    net, model = _random_resnet50()
    rng = np.random.default_rng(0)
    print(f"ResNet-50 (torchvision variant), 224x224, float32, {args.threads} thread(s); "
          "median ms; peak memory of the pass in a fresh process, MiB")
    peak = blas_peak_gflops()
    print(FLOOR_NOTE.format(peak=peak))
    header = (f"{'pass':<22} {'batch':>5} {'minicnn ms':>11} {'torch ms':>10} {'ratio':>7}"
              f" {'floor':>6} {'products':>8} {'minicnn MiB':>12} {'torch MiB':>10}"
              f" {'rel diff':>9}")
    print(header)
    print("-" * len(header))
    all_ok = True
    ratios = {"forward": [], "forward + input grad": []}
    for batch in (1, 8):
        x = rng.standard_normal((batch, 3, 224, 224)).astype(np.float32)
        onehot = np.zeros((batch, 1000), np.float32)
        onehot[:, 281] = 1.0
        mine_forward, torch_forward, mine_backward, torch_backward = \
            _forward_and_input_gradient(torch, net, model, x, onehot)
        for name, kind, fa, fb in (("forward", "forward", mine_forward, torch_forward),
                                   ("forward + input grad", "backward", mine_backward,
                                    torch_backward)):
            mem_a = peak_memory_mib("minicnn", kind, batch)
            mem_b = peak_memory_mib("torch", kind, batch)
            diff = rel_norm_diff(fa(), fb().numpy())
            ok = diff < (TOLERANCE if kind == "forward" else GRADIENT_TOLERANCE)
            all_ok &= ok
            t_a, t_b = time_pair(fa, fb, args.budget, least=2, most=10)
            ratios[name].append(t_a / t_b)
            floor = floor_ms(pass_multiply_adds(net, x, backward=kind == "backward"), peak)
            products = products_ms(fa, args.threads)
            print(f"{name:<22} {batch:>5} {t_a:>11.1f} {t_b:>10.1f} {t_a / t_b:>7.2f}"
                  f" {floor / t_b:>6.2f} {products / t_b:>8.2f} {mem_a:>12.0f} {mem_b:>10.0f}"
                  f" {diff:>9.1e}"
                  f"{'' if ok else '  WRONG'}", flush=True)
    print("-" * len(header))
    for name, values in ratios.items():
        geomean = statistics.geometric_mean(values)
        print(f"geometric mean of the ratios, {name}: {geomean:.2f}")
    if not all_ok:
        print("FAILED: minicnn and PyTorch differ beyond the tolerance somewhere")
    return all_ok


# -- section: small networks ------------------------------------------------------

CIFAR_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10"
"""The real CIFAR-10 data, when present: akamaster's checkpoints and the test JPEGs."""


def _akamaster_resnet56():
    """minicnn's CIFAR ResNet-56 with akamaster's weights (converted into a temporary
    folder), or None when ../shared/data does not have the checkpoint."""
    import tempfile
    from minicnn.io.convert import convert
    from minicnn.io.model_file import load
    checkpoint = CIFAR_DATA / "resnet56-4bfd9763.th"
    if not checkpoint.is_file():
        return None
    with tempfile.TemporaryDirectory() as folder:
        convert(checkpoint, Path(folder) / "resnet56.h5")
        return load(Path(folder) / "resnet56.h5")


def _cifar_resnet56(torch):
    """ResNet-56 as minicnn and torch models with the same weights: akamaster's
    when ../shared/data has them, else random ones."""
    from torch_resnets import TorchCifarResNet, load_minicnn_state
    from minicnn.models import cifar_resnet
    net = _akamaster_resnet56()
    if net is not None:
        net = net.eval()
        label = "akamaster weights"
    else:
        net = cifar_resnet(56, rng=0).eval()
        label = "random weights; no ../shared/data"
    model = load_minicnn_state(TorchCifarResNet(56), net.state_dict(), 56).eval()
    model.requires_grad_(False)
    return net, model, label


def bench_small(args, torch):
    """Many small layers: CIFAR ResNet-56 forward and forward + input gradient at
    batch 16 and 128, and a training step (forward, backward, SGD with momentum) of
    the shipped digits ResNet-8 at batch 64, float32, minicnn vs PyTorch."""
    net, model, label = _cifar_resnet56(torch)
    rng = np.random.default_rng(0)
    print(f"CIFAR ResNet-56 ({label}), 32x32, and the digits ResNet-8 training step, float32, "
          f"{args.threads} thread(s); median ms")
    peak = blas_peak_gflops()
    print(FLOOR_NOTE.format(peak=peak))
    header = (f"{'pass':<34} {'batch':>5} {'minicnn ms':>11} {'torch ms':>10} {'ratio':>7}"
              f" {'floor':>6} {'products':>8} {'rel diff':>9}")
    print(header)
    print("-" * len(header))
    all_ok, rows = True, []
    for batch in (16, 128):
        rows += _resnet56_passes(torch, net, model, batch, rng)
    rows.append(_digits_training_step(torch, 64))
    for name, batch, fa, fb, tolerance, multiply_adds in rows:
        diff = rel_norm_diff(fa(), np.asarray(fb()))
        ok = diff < tolerance
        all_ok &= ok
        t_a, t_b = time_pair(fa, fb, args.budget)
        floor = floor_ms(multiply_adds, peak)
        products = products_ms(fa, args.threads)
        print(f"{name:<34} {batch:>5} {t_a:>11.1f} {t_b:>10.1f} {t_a / t_b:>7.2f}"
              f" {floor / t_b:>6.2f} {products / t_b:>8.2f} {diff:>9.1e}"
              f"{'' if ok else '  WRONG'}", flush=True)
    print("-" * len(header))
    if not all_ok:
        print("FAILED: minicnn and PyTorch differ beyond the tolerance somewhere")
    return all_ok


def _resnet56_passes(torch, net, model, batch, rng):
    """Rows (name, batch, minicnn pass, torch pass, tolerance, multiply-adds) for one
    batch size: the forward pass and the forward pass + input gradient of one logit
    per image."""
    x = rng.standard_normal((batch, 3, 32, 32)).astype(np.float32)
    onehot = np.zeros((batch, 10), np.float32)
    onehot[np.arange(batch), rng.integers(0, 10, batch)] = 1.0
    mine_forward, torch_forward, mine_backward, torch_backward = \
        _forward_and_input_gradient(torch, net, model, x, onehot)
    return [("ResNet-56 forward", batch, mine_forward, torch_forward, TOLERANCE,
             pass_multiply_adds(net, x)),
            ("ResNet-56 forward + input grad", batch, mine_backward, torch_backward,
             GRADIENT_TOLERANCE, pass_multiply_adds(net, x, backward=True))]


def _digits_training_step(torch, batch):
    """(name, batch, minicnn step, torch step, tolerance, multiply-adds) for the shipped
    digits ResNet-8 on its own held-out digits. Each step returns the gradient on
    conv1's weight, the end of the whole backward pass, which the first call of each
    (from the same weights) must agree on."""
    from torch_resnets import TorchCifarResNet, load_minicnn_state
    from minicnn import load
    from minicnn.datasets import as_dataset
    from minicnn.layers import SoftmaxCrossEntropy
    from minicnn.optim import SGD
    net = load().train()
    model = load_minicnn_state(TorchCifarResNet(8), net.state_dict(), 8).train()
    x, labels = next(as_dataset(None, net).batches(batch))
    tx, tlabels = torch.from_numpy(x.copy()), torch.from_numpy(np.asarray(labels, np.int64))
    loss_fn, optimizer = SoftmaxCrossEntropy(), SGD(net, lr=0.01, momentum=0.9)
    torch_optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def mine_step():
        loss_fn.forward(net.forward(x), labels)
        net.backward(loss_fn.backward(), input_grad=False)  # as torch: x needs no gradient
        optimizer.step()
        return net["conv1"].grads["weight"]

    def torch_step():
        torch_optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(tx), tlabels).backward()
        torch_optimizer.step()
        return model.conv1.weight.grad.numpy().copy()

    multiply_adds = pass_multiply_adds(net, x, backward=True, input_grad=False,
                                       param_grads=True)
    return ("digits ResNet-8 training step", batch, mine_step, torch_step, GRADIENT_TOLERANCE,
            multiply_adds)


# -- section: techniques --------------------------------------------------------

def _technique_models(torch):
    """(label, minicnn net, torch model, x, classes, occlusion (size, stride), IG steps per
    pass, occlusion batch): the CIFAR ResNet-56 on 16 test images (the akamaster
    weights and real JPEGs when ../shared/data has them, else random) and ResNet-50
    (random weights) at 224 on one image."""
    rng = np.random.default_rng(0)
    net56, model56, weights = _cifar_resnet56(torch)
    akamaster = weights.startswith("akamaster")
    if akamaster and (CIFAR_DATA / "test").is_dir():
        from minicnn.images import load_image, preprocess
        paths = sorted((CIFAR_DATA / "test").glob("*/*.jpg"))[::625][:16]  # one in 625: all classes
        x56 = np.stack([preprocess(load_image(p), net56.metadata["preprocessing"]) for p in paths])
        classes56 = [net56.metadata["labels"].index(p.parent.name) for p in paths]
        label56 = "ResNet-56 (akamaster), 16 CIFAR JPEGs"
    else:
        x56 = rng.standard_normal((16, 3, 32, 32)).astype(np.float32)
        classes56 = [int(c) for c in rng.integers(0, 10, 16)]
        label56 = ("ResNet-56 (akamaster), 16 random images" if akamaster
                   else "ResNet-56 (random weights; no ../shared/data)")
    net50, model50 = _random_resnet50()
    x50 = rng.standard_normal((1, 3, 224, 224)).astype(np.float32)
    return [(label56, net56, model56, x56.astype(np.float32), classes56, (8, 4), 4, 64),
            ("ResNet-50 (torchvision, random), 224", net50, model50, x50, [281], (56, 28), 10, 16)]


def _torch_occlusion(torch, model, x, classes, size, stride, fill, batch_size):
    """The occlusion map the plain way: every occluded copy, then softmax probabilities."""
    n, _, height, width = x.shape
    rows, columns = (height - size) // stride + 1, (width - size) // stride + 1
    copies = x.repeat_interleave(rows * columns, dim=0).reshape(n, rows, columns, *x.shape[1:])
    for i in range(rows):
        for j in range(columns):
            copies[:, i, j, :, i * stride:i * stride + size, j * stride:j * stride + size] = fill
    copies = copies.reshape(-1, *x.shape[1:])
    wanted = torch.as_tensor(classes).repeat_interleave(rows * columns)
    probabilities = []
    with torch.no_grad():
        for start in range(0, len(copies), batch_size):
            p = torch.softmax(model(copies[start:start + batch_size]), dim=1)
            probabilities.append(p[torch.arange(len(p)), wanted[start:start + batch_size]])
    return torch.cat(probabilities).reshape(n, rows, columns)


def _timed_twice(fa, fb):
    """((result, mean ms) of fa, and of fb) over two rounds of one call each, a then b."""
    results, times = [None, None], [[], []]
    for _ in range(2):
        for k, fn in enumerate((fa, fb)):
            time.sleep(0.3)  # let the other engine's spinning threads go idle (see time_pair)
            start = time.perf_counter()
            results[k] = fn()
            times[k].append((time.perf_counter() - start) * 1e3)
    return (results[0], statistics.mean(times[0])), (results[1], statistics.mean(times[1]))


def bench_techniques(args, torch):
    """Saliency and occlusion, minicnn vs PyTorch (plain autograd; the guided rule as a
    custom autograd ReLU): vanilla gradient, guided backprop, integrated gradients
    (50 steps from the zero image) and an occlusion map, float32."""
    from torch_saliency import torch_gradient, torch_integrated_gradients
    from minicnn.techniques import guided_backprop, integrated_gradients, vanilla_gradient
    from minicnn.techniques.occlusion import occlusion_map
    print(f"Techniques, float32, {args.threads} thread(s); median ms (the mean of two calls for "
          "the many-pass methods); error: rel. norm diff (gradients), max rel diff "
          "(probabilities)")
    header = (f"{'technique':<26} {'batch':>5} {'minicnn ms':>11} {'torch ms':>10} {'ratio':>7}"
              f" {'error':>9}")
    all_ok, ratios = True, []
    for label, net, model, x, classes, (size, stride), steps_per_pass, occlusion_batch in \
            _technique_models(torch):
        print(label)
        print(header)
        print("-" * len(header))
        n = len(x)
        zero = np.zeros_like(x)
        cases = [
            ("vanilla gradient", lambda: vanilla_gradient(net, x, classes),
             lambda: torch_gradient(model, x, classes), rel_norm_diff, False),
            ("guided backprop", lambda: guided_backprop(net, x, classes),
             lambda: torch_gradient(model, x, classes, "guided"), rel_norm_diff, False),
            ("integrated gradients (50)",
             lambda: integrated_gradients(net, x, classes, steps=50,
                                          batch_size=steps_per_pass * n, progress=False),
             lambda: torch_integrated_gradients(model, x, classes, zero, 50,
                                                steps_per_pass).numpy(), rel_norm_diff, True),
            (f"occlusion {size}/{stride}",
             lambda: occlusion_map(net, x, classes, size, stride, batch_size=occlusion_batch,
                                   progress=False),
             lambda: _torch_occlusion(torch, model, torch.from_numpy(x), classes, size, stride,
                                      0.0, occlusion_batch).numpy(), max_rel_diff, True)]
        for name, fa, fb, error, heavy in cases:
            if heavy:  # tens of seconds a call: two timed calls each, checked as they come
                (a, t_a), (b, t_b) = _timed_twice(fa, fb)
            else:
                a, b = fa(), fb()
                t_a, t_b = time_pair(fa, fb, args.budget, least=2, most=10)
            diff = error(a, b)
            ok = diff < (TOLERANCE if error is max_rel_diff else GRADIENT_TOLERANCE)
            all_ok &= ok
            ratios.append(t_a / t_b)
            print(f"{name:<26} {n:>5} {t_a:>11.1f} {t_b:>10.1f} {t_a / t_b:>7.2f} {diff:>9.1e}"
                  f"{'' if ok else '  WRONG'}", flush=True)
        print("-" * len(header))
    geomean = statistics.geometric_mean(ratios)
    print(f"geometric mean of the ratios (minicnn / torch): {geomean:.2f}")
    if not all_ok:
        print("FAILED: minicnn and PyTorch differ beyond the tolerance somewhere")
    return all_ok


# -- section: adversarial ---------------------------------------------------------

def _adversarial_models(torch):
    """CIFAR ResNet-56 in both engines with the same weights: the akamaster
    checkpoint when ../shared/data has it, else torch_resnets' random weights."""
    from torch_resnets import (TorchCifarResNet, load_minicnn_state, randomize_torch,
                               torch_to_minicnn_name)
    from minicnn.models import cifar_resnet
    model = TorchCifarResNet(56)
    net = _akamaster_resnet56()
    if net is not None:
        load_minicnn_state(model, net.state_dict(), 56)
        return net.eval(), model.eval(), "akamaster weights"
    randomize_torch(model, seed=0)
    net = cifar_resnet(56, rng=0)
    net.load_state_dict({torch_to_minicnn_name(name, 56): tensor.numpy()
                         for name, tensor in list(model.named_parameters())
                         + list(model.named_buffers()) if not name.endswith("num_batches_tracked")})
    net.metadata["preprocessing"] = {"scale": 1 / 255, "mean": [0.485, 0.456, 0.406],
                                     "std": [0.229, 0.224, 0.225]}
    return net.eval(), model.eval(), "random weights (no ../shared/data)"


def bench_adversarial(args, torch):
    """PGD, 10 steps, on CIFAR ResNet-56 at batch 128, in pixel space with the
    preprocessing differentiated through; the same loop written in torch.

    Correctness first: one step (FGSM) in float32 must give the same image in
    both engines except for the few pixels whose gradient is within rounding of
    zero (in float64 they agree exactly: tests/test_adversarial*.py)."""
    import torch.nn.functional as F
    from minicnn.techniques.adversarial import pgd
    net, model, weights = _adversarial_models(torch)
    model.requires_grad_(False)
    spec = net.metadata["preprocessing"]
    mean = torch.tensor(spec["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(spec["std"]).view(1, 3, 1, 1)
    scale = 255.0 * spec["scale"]
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 1, (128, 3, 32, 32)).astype(np.float32)
    labels = rng.integers(0, 10, 128)
    eps, alpha, steps = 8 / 255, 2 / 255, 10

    def torch_pgd(count):
        x0 = torch.from_numpy(images)
        target = torch.from_numpy(labels)
        x = x0.clone()
        for _ in range(count):
            x.requires_grad_(True)
            loss = F.cross_entropy(model((x * scale - mean) / std), target, reduction="sum")
            grad, = torch.autograd.grad(loss, x)
            x = torch.clamp(torch.clamp(x.detach() + alpha * grad.sign(), x0 - eps, x0 + eps),
                            0, 1)
        return x.numpy()

    def mine(count):
        return pgd(net, images, labels, eps, alpha=alpha, steps=count, random_start=False)

    differing = float((mine(1) != torch_pgd(1)).mean())
    ok = differing < 1e-3
    print(f"PGD on CIFAR ResNet-56 ({weights}), batch 128, {steps} steps, float32, "
          f"{args.threads} thread(s); median ms")
    print(f"one step: {differing:.2e} of the pixels differ between the engines"
          f"{'' if ok else '  WRONG'}")
    t_mine, t_torch = time_pair(lambda: mine(steps), lambda: torch_pgd(steps), args.budget,
                                rounds=2, least=1, most=3)
    print(f"{'minicnn ms':>11} {'torch ms':>10} {'ratio':>7}")
    print(f"{t_mine:>11.0f} {t_torch:>10.0f} {t_mine / t_torch:>7.2f}")
    return ok


# -- section: image-optimizing objectives -------------------------------------------

def bench_optimize(args, torch):
    """One evaluation (forward and backward to the image) of the style objective on
    ResNet-50 and on VGG-19 at 224x224, and of the inversion objective on ResNet-50,
    against the same objective in PyTorch autograd (random weights). ResNet-50's
    style: content res4, style conv1_relu and res2..res5; VGG-19's: Gatys et al.'s
    content relu4_2, style relu1_1 ... relu5_1 (both Gram matrices, style weight
    1e5); inversion: the code at res4 with the alpha-norm and TV priors."""
    from optimize_oracle import torch_features, torch_tv, valid_bound
    from minicnn import build
    from minicnn.images import DEFAULT_PREPROCESSING
    from minicnn.techniques import inversion_objective, style_objective
    from minicnn.techniques.style import GATYS_VGG_LAYERS
    net, model = _random_resnet50()
    net.metadata["preprocessing"] = DEFAULT_PREPROCESSING
    vgg = build("vgg19", rng=0)
    vgg.metadata["preprocessing"] = DEFAULT_PREPROCESSING
    vgg_weights = {name: torch.from_numpy(value) for name, value in vgg.state_dict().items()}
    rng = np.random.default_rng(0)
    x, content, style = (rng.standard_normal((1, 3, 224, 224)).astype(np.float32)
                         for _ in range(3))
    layers = ["conv1_relu", "res2", "res3", "res4", "res5"]
    vgg_content, vgg_layers = GATYS_VGG_LAYERS
    cases = {"ResNet-50 style": style_objective(net, content, style, "res4", layers,
                                                style_weight=1e5),
             "VGG-19 style": style_objective(vgg, content, style, style_weight=1e5),
             "ResNet-50 inversion": inversion_objective(net, content, "res4")}

    def vgg_features(xt, wanted):
        """VGG-19's activations at ``wanted`` through torch.nn.functional, same weights."""
        out, h = {}, xt
        for name in vgg.names():
            if name.startswith("conv"):
                h = torch.nn.functional.conv2d(h, vgg_weights[f"{name}.weight"],
                                               vgg_weights[f"{name}.bias"], padding=1)
            elif name.startswith("relu"):
                h = torch.relu(h)
            elif name.startswith("pool"):
                h = torch.nn.functional.max_pool2d(h, 2, 2)
            if name in wanted:
                out[name] = h
            if len(out) == len(wanted):
                return out
        raise KeyError(f"VGG-19 has no layers {sorted(set(wanted) - set(out))}")

    def gram(f):
        f = f.flatten(2)
        return f @ f.transpose(1, 2)

    with torch.no_grad():
        features_c = torch_features(model, torch.from_numpy(content))
        grams = {name: gram(f) for name, f in torch_features(model, torch.from_numpy(style)).items()
                 if name in layers}
        vgg_c = vgg_features(torch.from_numpy(content), [vgg_content])[vgg_content]
        vgg_grams = {name: gram(f) for name, f in
                     vgg_features(torch.from_numpy(style), vgg_layers).items()}
    bound, pixels = valid_bound(), 224 * 224

    def style_loss(features, content_layer, content_code, targets):
        loss = 0.5 * ((features[content_layer] - content_code) ** 2).sum()
        for name, target in targets.items():
            f = features[name]
            c, m = f.shape[1], f.shape[2] * f.shape[3]
            loss = loss + 1e5 / len(targets) * ((gram(f) - target) ** 2).sum() \
                / (4 * c * c * m * m)
        return loss

    def torch_style(xt):
        return style_loss(torch_features(model, xt), "res4", features_c["res4"], grams)

    def torch_vgg_style(xt):
        features = vgg_features(xt, [vgg_content, *vgg_layers])
        return style_loss(features, vgg_content, vgg_c, vgg_grams)

    def torch_inversion(xt):
        code = features_c["res4"]
        data = ((torch_features(model, xt)["res4"] - code) ** 2).sum() / (code ** 2).sum()
        return (data + 1e-3 * (xt.abs() ** 6).sum() / (pixels * bound ** 6)
                + 1e-3 * torch_tv(xt) / (pixels * (bound / 6.5) ** 2))

    references = {"ResNet-50 style": torch_style, "VGG-19 style": torch_vgg_style,
                  "ResNet-50 inversion": torch_inversion}
    print(f"ResNet-50 (torchvision variant) and VGG-19, random weights, 224x224, float32, "
          f"{args.threads} thread(s): one evaluation of the objective, forward + backward to "
          "the image")
    header = (f"{'objective':<20} {'minicnn ms':>11} {'torch ms':>10} {'ratio':>7} "
              f"{'grad diff':>10}")
    print(header)
    print("-" * len(header))
    all_ok = True
    for name, objective in cases.items():
        def mine(objective=objective):
            return objective(x)[1]

        def theirs(reference=references[name]):
            leaf = torch.from_numpy(x.copy()).requires_grad_(True)
            reference(leaf).backward()
            return leaf.grad

        diff = rel_norm_diff(mine(), theirs().numpy())
        ok = diff < GRADIENT_TOLERANCE
        all_ok &= ok
        t_a, t_b = time_pair(mine, theirs, args.budget, least=2, most=10)
        print(f"{name:<20} {t_a:>11.1f} {t_b:>10.1f} {t_a / t_b:>7.2f} {diff:>10.1e}"
              f"{'' if ok else '  WRONG'}", flush=True)
    return all_ok


SECTIONS = {
    "conv": bench_conv,
    "resnet50": bench_resnet50,
    "small": bench_small,
    "techniques": bench_techniques,
    "adversarial": bench_adversarial,
    "optimize": bench_optimize,
}


def main(argv=None):
    parser = argparse.ArgumentParser(description="Time minicnn against PyTorch on the CPU.")
    parser.add_argument("--only", choices=sorted(SECTIONS), action="append",
                        help="run only this section (repeatable); default: all")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                        help="threads for both engines (default: os.cpu_count())")
    parser.add_argument("--probe", help=argparse.SUPPRESS)
    parser.add_argument("--budget", type=float, default=4.0,
                        help="seconds of timed repeats per case and both engines (default 4)")
    parser.add_argument("--cpu-time", action="store_true",
                        help="time by the process's CPU time, not wall time (a loaded machine; "
                             "meaningful with --threads 1)")
    args = parser.parse_args(argv)
    if args.probe:
        set_num_threads(1)
        with threadpool_limits(limits=1):
            memory_probe(args.probe)
        return 0
    if args.threads < 1:
        parser.error("--threads must be at least 1")
    if threadpool_limits is None:
        sys.exit("benchmark.py needs threadpoolctl to fix NumPy's thread count: "
                 "pip install threadpoolctl")
    torch = import_torch()
    torch.set_num_threads(args.threads)
    set_num_threads(args.threads)
    describe_machine(torch, args.threads)
    if args.cpu_time:
        global CLOCK
        CLOCK = time.process_time
        print("times below are CPU times of this process (--cpu-time)\n")
    ok = True
    with threadpool_limits(limits=args.threads):
        for name in dict.fromkeys(args.only or SECTIONS):  # in order, each once
            ok &= SECTIONS[name](args, torch)
            print()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
