"""Images in, predictions out: the job behind ``minicnn classify``."""
import numpy as np

from .backend import to_cpu
from .images import load_image, preprocess
from .layers import softmax


def labels_of(net):
    labels = net.metadata.get("labels")
    n = net.metadata.get("num_classes")
    return labels if labels else [f"class {i}" for i in range(n or 0)]


def classify(net, paths, top=5, batch_size=16):
    """Top-``top`` (label, probability) pairs, best first, for each image file."""
    spec = net.metadata["preprocessing"]
    labels = labels_of(net)
    xp = net.array_module()
    results = []
    for start in range(0, len(paths), batch_size):
        chunk = paths[start:start + batch_size]
        batch = np.stack([preprocess(load_image(p), spec) for p in chunk])
        probs = to_cpu(softmax(net.forward(xp.asarray(batch), cache=False)))
        for path, p in zip(chunk, probs):
            best = np.argsort(-p, kind="stable")[:top]
            results.append({"path": str(path),
                            "predictions": [[labels[i], float(p[i])] for i in best]})
    return results
