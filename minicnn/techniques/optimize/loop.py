"""The loop every image-optimizing technique runs.

:func:`minimize` takes an objective ``x -> (loss, dloss/dx)``, a start image and
an optimizer, and returns ``(image, history)``:

* a step rule (:mod:`.optimizers`): each step draws a jitter shift, evaluates the
  objective on the rolled image, rolls the gradient back, steps, blurs every
  ``blur_every`` steps, and clips to ``bounds``;
* ``"lbfgs"``: ``scipy.optimize.minimize(method="L-BFGS-B")`` with ``bounds`` as
  box constraints. scipy works on float64 host vectors; each evaluation turns the
  vector into an image of the start image's dtype on its device (one host-device
  crossing each way on CuPy). ``steps`` caps the iterations, ``max_evaluations``
  the evaluations (the line search may evaluate more than once per iteration).

A NaN or Inf in a loss or gradient stops the run with an error naming the step.
"""
import numpy as np
from tqdm.auto import tqdm

from ...backend import get_array_module, to_cpu
from .image_moves import clip_to_range, gaussian_blur, random_shift, roll
from .objective import as_objective
from .optimizers import make_optimizer


class History:
    """``loss[k]``: the loss at step k (before the step moves the image);
    ``evaluations[k]``: objective evaluations made up to and including step k."""

    def __init__(self, optimizer):
        self.optimizer = optimizer
        self.message = ""  # why L-BFGS stopped
        self.loss = []
        self.evaluations = []

    def record(self, loss, evaluations):
        self.loss.append(float(loss))
        self.evaluations.append(int(evaluations))

    def __len__(self):
        return len(self.loss)

    def __repr__(self):
        last = f", last loss {self.loss[-1]:.6g}" if self.loss else ""
        total = self.evaluations[-1] if self.evaluations else 0
        return f"History({self.optimizer}: {len(self)} steps, {total} evaluations{last})"


def as_rng(rng):
    """A numpy Generator from a seed (or the Generator itself)."""
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


def check_steps(steps, name="steps"):
    if int(steps) != steps or steps < 1:
        raise ValueError(f"{name} must be a positive integer, received {steps!r}")
    return int(steps)


def checked_evaluation(objective, x, step):
    """``objective(x)``, refusing a NaN or Inf in the loss or the gradient."""
    loss, grad = objective(x)
    xp = get_array_module(grad)
    if not np.isfinite(loss) or not bool(xp.isfinite(grad).all()):
        what = "loss" if not np.isfinite(loss) else "gradient"
        raise FloatingPointError(f"step {step}: the {what} is NaN or Inf (loss {loss}); lower the "
                                 "learning rate or the regularizer weights, or start from another "
                                 "image")
    if grad.shape != x.shape:
        raise ValueError(f"the objective returned a gradient of shape {tuple(grad.shape)} for an "
                         f"image of shape {tuple(x.shape)}")
    return loss, grad


def minimize(objective, x0, optimizer="adam", steps=100, lr=None, bounds=None, jitter=0,
             blur_every=0, blur_sigma=0.5, max_evaluations=None, rng=0, progress=True,
             desc="optimize"):
    """Minimize ``objective`` from ``x0``; returns ``(image, History)``.

    ``optimizer``: 'gradient', 'normalized', 'adam' (with ``lr``), an object with
    ``step(x, grad)``, or 'lbfgs'. ``bounds``: (low, high) broadcastable to x
    (see :func:`.image_moves.valid_range`) or None. ``jitter`` (pixels),
    ``blur_every`` (steps) and ``blur_sigma`` apply to step rules only.
    """
    steps = check_steps(steps)
    objective = as_objective(objective)
    rng = as_rng(rng)
    if optimizer == "lbfgs":
        if jitter or blur_every:
            raise ValueError("L-BFGS needs the same objective at every evaluation: use jitter=0 "
                             "and blur_every=0 with optimizer='lbfgs', or a step rule")
        return _lbfgs(objective, x0, steps, bounds, max_evaluations, progress, desc)
    rule = make_optimizer(optimizer, lr)
    if hasattr(rule, "reset"):
        rule.reset()
    history = History(optimizer if isinstance(optimizer, str) else type(rule).__name__)
    x = clip_to_range(x0.copy(), bounds)
    for step in tqdm(range(steps), desc=desc, disable=not progress, leave=False):
        shift = random_shift(rng, jitter)
        loss, grad = checked_evaluation(objective, roll(x, shift) if jitter else x, step)
        if jitter:
            grad = roll(grad, (-shift[0], -shift[1]))
        x = rule.step(x, grad).astype(x0.dtype, copy=False)
        if blur_every and (step + 1) % blur_every == 0:
            x = gaussian_blur(x, blur_sigma)
        x = clip_to_range(x, bounds)
        history.record(loss, step + 1)
    return x, history


def _lbfgs(objective, x0, steps, bounds, max_evaluations, progress, desc):
    from scipy.optimize import Bounds, minimize as scipy_minimize
    xp = get_array_module(x0)
    shape, dtype = x0.shape, x0.dtype
    history = History("lbfgs")
    state = {"evaluations": 0, "loss": None}
    bar = tqdm(total=steps, desc=desc, disable=not progress, leave=False)

    def function(vector):
        if state["evaluations"] == budget:
            raise _Budget
        x = xp.asarray(vector.reshape(shape), dtype=dtype)  # one host -> device copy
        loss, grad = checked_evaluation(objective, x, len(history))
        state["evaluations"] += 1
        state["loss"] = loss
        return loss, np.asarray(to_cpu(grad), np.float64).ravel()  # one device -> host copy

    def callback(intermediate_result):
        state["x"] = intermediate_result.x.copy()
        history.record(intermediate_result.fun, state["evaluations"])
        bar.update(1)

    box = None
    if bounds is not None:
        low, high = (np.broadcast_to(np.asarray(to_cpu(b), np.float64), shape).ravel()
                     for b in bounds)
        box = Bounds(low, high)
    start = np.asarray(to_cpu(clip_to_range(x0, bounds)), np.float64).ravel()
    budget = max_evaluations or 20 * steps
    state["x"] = start
    # scipy may overrun maxfun inside a line search; the budget stops it exactly instead
    options = {"maxiter": steps, "maxfun": budget + 1, "ftol": 0.0, "gtol": 0.0}
    try:
        result = scipy_minimize(function, start, jac=True, method="L-BFGS-B", bounds=box,
                                callback=callback, options=options)
        history.message, last = str(result.message), result.x
    except _Budget:
        history.message, last = f"stopped at the budget of {budget} evaluations", state["x"]
    finally:
        bar.close()
    return xp.asarray(last.reshape(shape), dtype=dtype), history


class _Budget(Exception):
    """Raised inside scipy's L-BFGS-B when the evaluation budget is spent."""
