"""Objectives computed by the network: one forward pass, one backward pass.

* :func:`target_score`: a target's value (a class score, ``"LAYER:CHANNEL"``,
  ``"LAYER:CHANNEL:Y:X"``, see :mod:`..targets`) summed over the batch, with its
  gradient from :func:`..targets.backprop_target`.
* :func:`activation_objective`: a loss ``f`` of the activations at named layers.
  The forward pass stops at the deepest of them and keeps them all; ``f``
  returns the loss and ``dloss/d(activation)`` per layer, which the backward
  pass takes as injected gradients (``net.backward(inject=...)``) and carries
  down to the image.
"""
from ..targets import backprop_target, check_batch
from .objective import Objective


def target_score(net, target):
    """``x -> (sum_n S(x_n), dS/dx)`` for a target ``S``; minimize its negative to
    maximize the score."""
    def score(x):
        result = backprop_target(net, x, target)
        return float(result.score.sum()), result.input
    return Objective(score, f"score({target!r})")


def network_dtype(net):
    """The dtype of the network's parameters (images are optimized in it)."""
    for layer in net.layers():
        for value in layer.params.values():
            return value.dtype
    raise ValueError("the network has no parameters")


def deepest(net, layers):
    """The layer of ``layers`` that the forward pass reaches last (checking each name)."""
    order = {name: i for i, name in enumerate(net.names())}
    for name in layers:
        net._require(name)  # KeyError naming close matches
    return max(layers, key=order.__getitem__)


def activation_objective(net, layers, function, name="activations"):
    """``x -> (f(A), dx)`` where ``A = {layer: activation}`` at ``layers`` and
    ``f(A)`` returns ``(loss, {layer: dloss/dA[layer]})``."""
    layers = [layers] if isinstance(layers, str) else list(layers)
    if not layers:
        raise ValueError("activation_objective needs at least one layer name")
    stop = deepest(net, layers)

    def evaluate(x):
        check_batch(net, x)
        _, activations = net.forward(x, stop_at=stop, capture=layers)
        loss, grads = function(activations)
        dx = net.backward(inject=grads, param_grads=False)
        return float(loss), dx
    return Objective(evaluate, name)
