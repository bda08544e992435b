"""Sharing a layer's independent pieces of work out over the CPU cores.

A convolution works on its batch in groups of images (:func:`image_groups`),
and each group is independent of the others: its columns, its product, its
slice of the output. NumPy's BLAS could spread each product over the cores
on its own, but then everything between the products (the column copies, the
Winograd transforms) runs on one core, and the small products of the CIFAR
ResNets (16 to 64 output channels) gain nothing from BLAS's threads: measured
on 2 cores, a 16-channel 3x3 layer at 32x32 took 1.12 ms for 16 images on one
thread, 1.16 ms with two BLAS threads and 0.85 ms with its groups on two
threads.

So where a layer has several groups, :func:`run_in_parallel` gives each
thread whole groups and holds BLAS to one thread meanwhile: the copies and
the products of a group then run together on one core, in that core's cache.
NumPy lets go of Python's global lock inside its array loops and BLAS calls,
so the threads do run at once; what they share is only the Python glue
between the array operations. A layer with a single group (one large image)
leaves the products to BLAS's own threads, as before.

The thread count is :func:`get_num_threads`: ``MINICNN_NUM_THREADS``, else
``OMP_NUM_THREADS``, else the cores this process may run on;
:func:`set_num_threads` changes it (1 runs everything in the calling thread,
as does any array module other than NumPy). Results repeat exactly for a
given thread count: a sum over groups (the weight gradient) is added up in
group order. The groups themselves follow the thread count, so another count
may round differently (to 1e-12 in float64, ``tests/test_threads.py``).
"""
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import numpy as np

_local = threading.local()  # .inside: this thread is running a share of a parallel region
_lock = threading.Lock()
_threads = None
_pool = None
_blas = None


def _default_threads():
    for variable in ("MINICNN_NUM_THREADS", "OMP_NUM_THREADS"):
        value = os.environ.get(variable, "").strip()
        if value.isdigit() and int(value) > 0:
            return int(value)
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def get_num_threads():
    """How many threads a layer shares its groups of images over."""
    global _threads
    if _threads is None:
        _threads = _default_threads()
    return _threads


def set_num_threads(count):
    """Use ``count`` threads (>= 1) from now on; returns the previous count."""
    global _threads, _pool
    if not isinstance(count, (int, np.integer)) or count < 1:
        raise ValueError(f"set_num_threads: expected a whole number >= 1, received {count!r}")
    previous = get_num_threads()
    with _lock:
        _threads = int(count)
        if _pool is not None:
            _pool.shutdown(wait=True)
            _pool = None
    return previous


def _forget_pool():
    """In a forked child the pool's threads are gone: start a new pool when needed."""
    global _pool
    _pool = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)


def _blas_controllers():
    """threadpoolctl's handles on NumPy's BLAS (empty if it cannot find one)."""
    global _blas
    if _blas is None:
        try:
            from threadpoolctl import ThreadpoolController
            _blas = ThreadpoolController().select(user_api="blas").lib_controllers
        except Exception:  # noqa: BLE001 - no threadpoolctl or an unknown BLAS: leave BLAS alone
            _blas = []
    return _blas


@contextmanager
def whole_pass(images, xp=np):
    """Hold BLAS to one thread for a network pass over ``images`` images, when
    :func:`run_in_parallel` will share every layer's work out anyway (NumPy, more
    than one thread, a batch of at least two images; :func:`image_groups` then
    makes at least two groups in every layer).

    Why for the whole pass and not only inside each shared region: after a product
    that BLAS ran on several threads, its idle threads spin for a while on the
    cores, waiting for more, and slow down the threads of the next shared region.
    Measured on 2 cores in a per-layer profile, ResNet-56's forward and backward
    at batch 16 took 120 ms with BLAS threaded between regions and 79 ms held to
    one thread (105 ms on one core).
    """
    if (xp is not np or images < 2 or get_num_threads() < 2
            or getattr(_local, "held", False) or getattr(_local, "inside", False)):
        yield
        return
    blas = _blas_controllers()
    before = [controller.num_threads for controller in blas]
    for controller in blas:
        controller.set_num_threads(1)
    _local.held = True
    try:
        yield
    finally:
        _local.held = False
        for controller, count in zip(blas, before):
            controller.set_num_threads(count)


def _run_share(work, items):
    _local.inside = True
    try:
        return [work(item) for item in items]
    finally:
        _local.inside = False


def run_in_parallel(work, items, xp=np):
    """``[work(item) for item in items]``, the items shared out over the threads.

    ``work`` must only write what belongs to its own item (its slice of an
    output) and use :func:`~.base.scratch` buffers, which are per thread.
    Runs in the calling thread when there is one item or one thread, for
    arrays of another module than NumPy (a GPU queues its work anyway), and
    inside a share of another parallel region.
    """
    items = list(items)
    threads = min(get_num_threads(), len(items))
    if threads < 2 or xp is not np or getattr(_local, "inside", False):
        return [work(item) for item in items]
    global _pool
    with _lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(get_num_threads() - 1, thread_name_prefix="minicnn")
        pool = _pool
    shares = [items[k::threads] for k in range(threads)]  # round robin: balanced
    blas = [] if getattr(_local, "held", False) else _blas_controllers()
    before = [controller.num_threads for controller in blas]
    for controller in blas:
        controller.set_num_threads(1)
    futures = []
    try:
        futures = [pool.submit(_run_share, work, share) for share in shares[1:]]
        results = [_run_share(work, shares[0])]
    finally:
        errors = []
        for future in futures:  # wait for every share: they write into the caller's arrays
            try:
                future.result()
            except BaseException as error:  # noqa: BLE001 - re-raised below
                errors.append(error)
        for controller, count in zip(blas, before):
            controller.set_num_threads(count)
    if errors:
        raise errors[0]
    results += [future.result() for future in futures]
    ordered = [None] * len(items)
    for k, share in enumerate(results):
        ordered[k::threads] = share
    return ordered
