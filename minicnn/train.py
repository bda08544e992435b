"""A minimal mini-batch training loop with a progress bar."""
from tqdm.auto import tqdm

from .backend import get_array_module
from .layers import SoftmaxCrossEntropy
from .layers.base import as_generator


def predict(net, x, batch_size=256):
    """Logits for every row of ``x``, computed in eval mode, batch by batch."""
    was_training = any(layer.training for layer in net.layers())
    net.eval()
    xp = net.array_module()
    outs = [net.forward(xp.asarray(x[i:i + batch_size]), cache=False)
            for i in range(0, len(x), batch_size)]
    if was_training:
        net.train()
    return xp.concatenate(outs)


def accuracy(net, x, y, batch_size=256):
    """Top-1 accuracy of ``net`` on ``(x, y)``."""
    logits = predict(net, x, batch_size)
    xp = get_array_module(logits)
    return float((logits.argmax(axis=1) == xp.asarray(y)).mean())


def fit(net, optimizer, x, y, epochs=1, batch_size=64, rng=None, augment=None,
        val=None, progress=True, schedule=None):
    """Train ``net`` on ``(x, y)`` with softmax cross-entropy.

    Each epoch shuffles with ``rng`` (a seed or Generator, so runs repeat),
    optionally applies ``augment(batch, rng)``, and steps the optimizer once per
    mini-batch. ``schedule(epoch)`` may return a learning rate for that epoch.
    ``val=(x_val, y_val)`` adds validation accuracy to the history.
    Returns a list of per-epoch dicts (loss, train accuracy, val accuracy).
    """
    if len(x) != len(y):
        raise ValueError(f"fit: {len(x)} inputs but {len(y)} labels")
    rng = as_generator(rng)
    loss_fn = SoftmaxCrossEntropy()
    history = []
    for epoch in range(epochs):
        if schedule is not None:
            optimizer.lr = schedule(epoch)
        net.train()
        order = rng.permutation(len(x))
        total, correct, seen = 0.0, 0, 0
        batches = range(0, len(x), batch_size)
        bar = tqdm(batches, desc=f"epoch {epoch + 1}/{epochs}", disable=not progress, leave=False)
        for start in bar:
            idx = order[start:start + batch_size]
            xb, yb = x[idx], y[idx]
            if augment is not None:
                xb = augment(xb, rng)
            logits = net.forward(xb)
            loss = loss_fn.forward(logits, yb)
            net.backward(loss_fn.backward(), input_grad=False)  # no gradient on the images
            optimizer.step()
            total += float(loss) * len(idx)
            correct += int((logits.argmax(axis=1) == yb).sum())
            seen += len(idx)
            bar.set_postfix(loss=f"{total / seen:.4f}", acc=f"{correct / seen:.3f}")
        record = {"epoch": epoch + 1, "loss": total / seen, "train_accuracy": correct / seen}
        if val is not None:
            record["val_accuracy"] = accuracy(net, *val)
        history.append(record)
        if progress:
            tqdm.write(" ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}"
                                for k, v in record.items()))
    net.eval()
    return history
