r"""The linear explanation of adversarial examples (Goodfellow et al., 2015).

For a binary logistic classifier :math:`p = \sigma(w \cdot x + b)`, a change
:math:`\eta` with :math:`\|\eta\|_\infty \le \epsilon` moves the logit by at most
:math:`\epsilon \|w\|_1`, reached by :math:`\eta = \epsilon\,\mathrm{sign}(w)`. So the
smallest L-infinity change that gives probability :math:`p^*` is exactly

.. math::
    \eta = \epsilon\,\mathrm{sign}(w), \qquad
    \epsilon = \frac{\mathrm{logit}(p^*) - (w \cdot x + b)}{\|w\|_1}

(negative :math:`\epsilon` pushes the other way). Writing
:math:`\|w\|_1 = d\,\overline{|w|}`, :math:`\epsilon = \Delta / (d\,\overline{|w|})` with
:math:`\Delta` the logit gap: at a fixed typical weight size and gap the
:math:`\epsilon` needed falls like :math:`1/d`, because many small changes, one
per input, add up. :func:`epsilon_by_dimension` measures :math:`\epsilon`, the
mean weight and the gap on the same digit images at several resolutions and on
random data, so a table shows which factor moves.
"""
import numpy as np

from ...backend import get_array_module


def logit(p):
    return np.log(p) - np.log1p(-p)


def linear_epsilon(w, b, x, p):
    """The signed L-infinity size that moves :math:`\\sigma(w \\cdot x + b)` to ``p``."""
    p = float(p)
    if not 0.0 < p < 1.0:
        raise ValueError(f"the wanted probability must lie strictly between 0 and 1, received {p}")
    xp = get_array_module(w, x)
    w, x = xp.asarray(w).ravel(), xp.asarray(x).ravel()
    if w.shape != x.shape:
        raise ValueError(f"w has {w.size} entries but x has {x.size}: they must match")
    norm = float(xp.abs(w).sum())
    if norm == 0:
        raise ValueError("w is all zeros: no change of x moves the probability")
    return (logit(p) - float(w @ x + b)) / norm


def fool_linear(w, b, x, p):
    """``x`` changed by the smallest L-infinity perturbation that makes
    :math:`\\sigma(w \\cdot x + b) = p` (unclipped, shaped like x)."""
    xp = get_array_module(w, x)
    eps = linear_epsilon(w, b, x, p)
    return x + eps * xp.sign(xp.asarray(w).reshape(x.shape))


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def _fit_logistic(x, y, seed):
    from sklearn.linear_model import LogisticRegression
    model = LogisticRegression(C=1.0, max_iter=2000, random_state=seed).fit(x, y)
    return model.coef_[0], float(model.intercept_[0])


def digit_pair(first=3, second=8):
    """Two digit classes of scikit-learn's digits as gray images in [0, 1] (N, 32, 32)."""
    from ...datasets import digit_images
    images, labels = digit_images()
    keep = (labels == first) | (labels == second)
    return images[keep, :, :, 0].astype(np.float64) / 255, (labels[keep] == second).astype(int)


def _resize(images, size):
    from PIL import Image
    return np.stack([np.asarray(Image.fromarray(im).resize((size, size), Image.BILINEAR),
                                dtype=np.float64) for im in images.astype(np.float32)])


def epsilon_by_dimension(sizes=(8, 16, 32, 64), random_dims=(64, 256, 1024, 4096), p=0.99,
                         seed=0):
    """The median L-infinity change (over correctly classified inputs) that a
    logistic regression needs to reach probability ``p`` for the wrong class.

    Rows for the digits 3 vs 8 at ``sizes`` x ``sizes`` pixels, and for random
    "images" of ``random_dims`` pixels uniform in [0, 1] whose class is the sign of
    a random linear function (so a linear model fits it). Returns a list of dicts:
    source, d, accuracy, median eps, eps * d, the mean |w| and the median logit gap
    (the three factors of eps = gap / (d mean|w|)).
    """
    rows = []
    images, labels = digit_pair()
    for size in sizes:
        x = _resize(images, size).reshape(len(images), -1)
        rows.append(_measure(f"digits 3 vs 8, {size}x{size}", x, labels, p, seed))
    rng = np.random.default_rng(seed)
    for d in random_dims:
        x = rng.uniform(0, 1, (600, d))
        direction = rng.standard_normal(d)
        labels = ((x - 0.5) @ direction > 0).astype(int)
        rows.append(_measure(f"random pixels, d = {d}", x, labels, p, seed))
    return rows


def _measure(source, x, y, p, seed):
    w, b = _fit_logistic(x, y, seed)
    scores = x @ w + b
    right = (scores > 0) == (y == 1)
    # the wrong class at probability p: logit p for label 0 images, 1 - p for label 1
    wanted = np.where(y == 1, 1 - p, p)
    gap = np.abs(logit(wanted) - scores)
    eps = gap / np.abs(w).sum()
    median = float(np.median(eps[right]))
    return {"source": source, "d": x.shape[1], "accuracy": float(right.mean()),
            "median_eps": median, "eps_times_d": median * x.shape[1],
            "mean_abs_w": float(np.abs(w).mean()), "median_gap": float(np.median(gap[right]))}


def linear_example(size=32, p=0.99, seed=0):
    """One digit pushed across a logistic regression (3 vs 8 at ``size`` pixels):
    (image, perturbation, result, p before, p after, eps), images (size, size)."""
    images, labels = digit_pair()
    x = _resize(images, size).reshape(len(images), -1)
    w, b = _fit_logistic(x, labels, seed)
    index = int(np.flatnonzero(labels == 0)[0])
    adversarial = fool_linear(w, b, x[index], p)
    before, after = sigmoid(x[index] @ w + b), sigmoid(adversarial @ w + b)
    shape = (size, size)
    return (x[index].reshape(shape), (adversarial - x[index]).reshape(shape),
            adversarial.reshape(shape), float(before), float(after),
            float(linear_epsilon(w, b, x[index], p)))
