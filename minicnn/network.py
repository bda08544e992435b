"""Networks composed by hand from named layers and residual blocks.

Every layer and block has a dotted name (``"res2a"``, ``"res2a.branch2a"``), and
the network can

* run forward and stop after a named layer, capturing the outputs of others:
  ``out, acts = net.forward(x, stop_at="res4b", capture=["conv1", "res3a"])``;
* run backward from a gradient on the output (or on the ``stop_at`` layer) and
  from gradients injected at any named layers, added up on the way down:
  ``dx = net.backward(inject={"res4b": g4, "res5c": g5})``;
* switch the backward rule of every ReLU at once: ``net.set_relu_mode("guided")``;
* skip parameter gradients when only the input gradient is wanted:
  ``net.backward(dout, param_grads=False)``.

There is no autograd tape: a container's backward calls its children's
backward in reverse order, and a child that received no gradient (it lies past
the layer where the forward pass stopped, or above every injection point) is
skipped.
"""
import difflib

import numpy as np

from .backend import get_array_module
from .layers import Layer, Add, ReLU
from .layers.activation import check_relu_mode
from .layers.base import ShapeError
from .layers.threads import whole_pass


def _plus(a, b):
    """Sum of two gradients where None means 'no gradient reached here'."""
    return _plus_owned(a, False, b, False)[0]


def _plus_owned(a, a_owned, b, b_owned):
    """:func:`_plus` for a backward pass that tracks which gradients it owns (that
    nothing else holds): the sum goes into an owned one of the two when there
    is one (the same floats as ``a + b``), else into a new array. Returns
    (sum, whether the pass owns it)."""
    if a is None:
        return b, b_owned
    if b is None:
        return a, a_owned
    for into, owned, other in ((a, a_owned, b), (b, b_owned, a)):
        if owned and into.shape == other.shape and into.dtype == other.dtype:
            into += other
            return into, True
    return a + b, True


class _Stop(Exception):
    """Unwinds the forward pass once the stop_at layer has produced its output."""

    def __init__(self, output):
        super().__init__()
        self.output = output


class _Pass:
    """Bookkeeping for one forward or backward pass through a network."""

    def __init__(self, stop_at=None, capture=(), inject=None, cache=True):
        self.stop_at = stop_at
        self.cache = cache
        self.capture = set(capture)
        self.activations = {}  # forward: captured outputs; backward: captured gradients
        self.inject = inject or {}
        self.output_shapes = {}

    def arriving(self, module, dout, owned=False):
        """The gradient on ``module``'s output: what came down plus what is injected
        there (the caller's array, never owned), kept when a backward pass captures
        it (and then no longer owned: the caller gets it back). Returns
        (gradient, owned)."""
        dout, owned = _plus_owned(dout, owned, self.inject.get(module.name), False)
        if module.name in self.capture:
            self.activations[module.name] = dout
            owned = False
        return dout, owned

    def forward(self, module, *inputs, owned=False):
        """Run ``module``. ``owned``: its (first) input is an array that only this
        pass holds (see :meth:`owns_output`), which a layer with a
        ``forward_inplace`` method (ReLU, the residual add; batch norm when
        nothing is cached) overwrites instead of allocating a new one."""
        if isinstance(module, Container):
            out = module.run_forward(self, *inputs)
        else:
            if owned and hasattr(module, "forward_inplace") and (
                    not self.cache or module.inplace_keeps_cache):
                out = module.forward_inplace(*inputs)
            else:
                out = module.forward(*inputs)
            if not self.cache:  # free what only a backward pass would need
                module.cache = None
        self.output_shapes[module.name] = out.shape
        if module.name in self.capture:
            self.activations[module.name] = out
        if module.name == self.stop_at:
            raise _Stop(out)
        return out

    def chain(self, modules, x):
        """Run ``modules`` one after another on ``x``, which the caller still holds:
        only what a module returns may be owned by the next one. Returns the
        last output and whether this pass owns it."""
        owned = False
        for module in modules:
            x = self.forward(module, x, owned=owned)
            owned = self.owns_output(module)
        return x, owned

    def owns_output(self, module):
        """Whether ``module`` returned a new array that nobody else holds: a layer
        whose class promises a fresh output (``fresh_output``), that was not
        captured, and, when the pass caches, that does not keep its output for
        its own backward (``keeps_output``). Containers say no: their output
        may be a captured child's."""
        return (getattr(module, "fresh_output", False) and module.name not in self.capture
                and not (self.cache and module.keeps_output))

    def backward(self, module, dout, owned=False):
        """Backpropagate ``dout`` through ``module``; ``owned`` says that only this
        pass holds ``dout``, so a layer with ``backward_inplace`` (ReLU, batch
        norm) may overwrite it. Returns (gradient on the input, owned)."""
        dout, owned = self.arriving(module, dout, owned)
        if isinstance(module, Container):
            return module.run_backward(self, dout, owned)
        if dout is None:
            return None, False
        if owned and hasattr(module, "backward_inplace"):
            return module.backward_inplace(dout), True
        return module.backward(dout), owned or not module.passes_gradient_through


class Container:
    """Named children; subclasses say how data flows between them."""

    def __init__(self, name=""):
        self.name = name
        self.children = {}

    def add(self, name, module):
        if not name or "." in name:
            raise ValueError(f"a layer name must be non-empty and contain no dot, received {name!r}")
        if name in self.children:
            raise ValueError(f"{self.name or 'network'} already has a layer named {name!r}")
        self.children[name] = module
        module.name = f"{self.name}.{name}" if self.name else name
        if isinstance(module, Container):
            module._rename_children()
        return module

    def _rename_children(self):
        for child_name, child in self.children.items():
            child.name = f"{self.name}.{child_name}"
            if isinstance(child, Container):
                child._rename_children()

    def modules(self):
        """Every named module below this one, depth first, in forward order."""
        for child in self.children.values():
            yield child
            if isinstance(child, Container):
                yield from child.modules()

    def layers(self):
        """Every leaf layer below this one, in forward order."""
        return (m for m in self.modules() if isinstance(m, Layer))

    def __repr__(self):
        lines = [f"{type(self).__name__}("]
        for name, child in self.children.items():
            for i, line in enumerate(repr(child).splitlines()):
                lines.append(f"  {name}: {line}" if i == 0 else f"  {line}")
        lines.append(")")
        return "\n".join(lines)


class Sequential(Container):
    """Children applied one after another."""

    def __init__(self, layers=(), name=""):
        super().__init__(name)
        for child_name, module in layers:
            self.add(child_name, module)

    def run_forward(self, run, x):
        return run.chain(self.children.values(), x)[0]

    def run_backward(self, run, dout, owned=False):
        for child in reversed(list(self.children.values())):
            dout, owned = run.backward(child, dout, owned)
        return dout, owned


class Residual(Container):
    """``y = activation(branch(x) + shortcut(x))``, the residual block.

    ``branch`` and ``shortcut`` are lists of (name, layer) pairs; their names
    share the block's namespace. An empty shortcut is the identity. The sum is
    the child ``add``, the activation (a ReLU unless None) the child ``relu``.
    """

    def __init__(self, branch, shortcut=(), activation="relu", name=""):
        super().__init__(name)
        if activation not in ("relu", None):
            raise ValueError(f"unknown residual activation {activation!r}: use 'relu' or None")
        self.branch = [self.add(n, m) for n, m in branch]
        self.shortcut = [self.add(n, m) for n, m in shortcut]
        self.sum = self.add("add", Add())
        self.activation = self.add("relu", ReLU()) if activation == "relu" else None

    def run_forward(self, run, x):
        main, main_owned = run.chain(self.branch, x)  # x is shared: neither path owns it
        short, _ = run.chain(self.shortcut, x)
        out = run.forward(self.sum, main, short, owned=main_owned)
        if self.activation is not None:
            out = run.forward(self.activation, out, owned=run.owns_output(self.sum))
        return out

    def run_backward(self, run, dout, owned=False):
        if self.activation is not None:
            dout, owned = run.backward(self.activation, dout, owned)
        dout, owned = run.arriving(self.sum, dout, owned)
        d_main = d_short = None
        if dout is not None:
            d_main, d_short = self.sum.backward(dout)
        # d_main and d_short are one array, so neither path owns it
        main_owned = short_owned = False
        for child in reversed(self.branch):
            d_main, main_owned = run.backward(child, d_main, main_owned)
        for child in reversed(self.shortcut):
            d_short, short_owned = run.backward(child, d_short, short_owned)
        return _plus_owned(d_main, main_owned, d_short, short_owned)


class Network(Sequential):
    """The top-level container, with the user-facing forward/backward API.

    ``metadata`` carries what a weights file says about the model (labels,
    preprocessing, provenance).
    """

    def __init__(self, layers=(), metadata=None, aliases=None):
        super().__init__(layers)
        self.metadata = dict(metadata or {})
        self.aliases = {}
        for alias, target in (aliases or {}).items():
            self.add_alias(alias, target)
        self._last = None

    # -- addressing -----------------------------------------------------
    def add_alias(self, alias, target):
        """Let ``alias`` stand for the output of the module ``target`` wherever a
        name is taken (stop_at, capture, inject, ``net[alias]``). The ResNets name
        each stage this way after its last block: ``res4`` is ``res4f`` in ResNet-50."""
        if not alias or "." in alias or alias in self.names():
            raise ValueError(f"alias {alias!r} must be a new name without a dot")
        self.aliases[alias] = self._require(target)  # an alias of an alias: its module

    def names(self):
        """Every addressable name in forward order, an alias right after its target's."""
        names = [m.name for m in self.modules()]
        for alias, target in self.aliases.items():
            last = max(i for i, n in enumerate(names)
                       if n == target or n.startswith(target + "."))
            names.insert(last + 1, alias)
        return names

    def __getitem__(self, name):
        name = self.aliases.get(name, name)
        for module in self.modules():
            if module.name == name:
                return module
        raise KeyError(self._unknown(name))

    def _unknown(self, name):
        names = self.names()
        close = difflib.get_close_matches(str(name), names, n=3)
        hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
        return (f"unknown layer name {name!r}{hint} (net.names() lists all {len(names)} names)")

    def _require(self, name):
        """The module name that ``name`` (a module name or an alias) stands for."""
        if name not in set(self.names()):
            raise KeyError(self._unknown(name))
        return self.aliases.get(name, name)

    # -- passes -----------------------------------------------------------
    def forward(self, x, stop_at=None, capture=(), cache=True):
        """Run the network on an NCHW batch.

        Returns the output (of ``stop_at`` if given), or ``(output, activations)``
        when ``capture`` names layers whose outputs to keep. With ``cache=False``
        (inference: no backward pass will follow) each layer drops what it kept
        for backward right after its own forward, so only the activations
        still in use stay in memory. In either mode ReLU, the residual add and
        batch norm write their output over an input that nothing else holds
        (not the caller's ``x``, not a captured activation, not an output its
        layer keeps for backward); eval-mode batch norm only when nothing is
        cached, as its backward needs its input.
        """
        if isinstance(capture, str):
            capture = [capture]
        targets = {name: self._require(name) for name in capture}
        run = _Pass(stop_at=None if stop_at is None else self._require(stop_at),
                    capture=targets.values(), cache=cache)
        run.images = len(x) if getattr(x, "ndim", 0) else 0
        try:
            with whole_pass(run.images, get_array_module(x)):
                out = self.run_forward(run, x)
        except _Stop as stop:
            out = stop.output
        missing = [name for name, target in targets.items() if target not in run.activations]
        if missing:
            raise ValueError(f"captured layers {sorted(missing)} lie after stop_at={stop_at!r} "
                             "and were not computed")
        self._last = run
        return (out, {name: run.activations[t] for name, t in targets.items()}) if capture else out

    __call__ = forward

    def backward(self, dout=None, inject=None, param_grads=True, capture=(), input_grad=True):
        """Backpropagate and return the gradient on the input.

        ``dout`` is dL/d(output of the last forward pass, i.e. of its stop_at
        layer); ``inject`` maps layer names to dL/d(that layer's output). All of
        them are added up on the way down. With ``param_grads=False`` the layers
        skip their parameter gradients. ``capture`` names layers whose output
        gradient dL/d(output) to keep (Grad-CAM needs it); then the result is
        ``(dx, {name: gradient})``, zeros where no gradient reached a layer.
        With ``input_grad=False`` (a training step, which only wants the
        parameter gradients) dx is None, and a first layer that can skip it
        (Conv2d) does not compute it.
        Gradients that only this pass holds (not ``dout``, not an injected or a
        captured one) are overwritten on the way down by ReLU, eval-mode batch
        norm and the residual blocks' sums instead of allocating new ones.
        """
        if self._last is None:
            raise RuntimeError("backward called before forward: run net.forward(x) first")
        last = self._last
        if not last.cache:
            raise RuntimeError("the last forward pass ran with cache=False and kept nothing for "
                               "backward; run net.forward(x) (cache=True, the default) first")
        named, inject = dict(inject or {}), {}
        for name, grad in named.items():  # an alias and its target add up like any two
            target = self._require(name)
            inject[target] = _plus(inject.get(target), grad)
        if dout is not None:
            top = last.stop_at
            if top is None:
                top = list(self.children.values())[-1].name
            inject[top] = _plus(inject.get(top), dout)
        if not inject:
            raise ValueError("backward needs a gradient: pass dout or inject={name: gradient}")
        for name, grad in inject.items():
            if name not in last.output_shapes:
                raise ValueError(f"cannot inject a gradient at {name!r}: the last forward pass "
                                 f"stopped at {last.stop_at!r} before reaching it")
            expected = tuple(last.output_shapes[name])
            if tuple(grad.shape) != expected:
                raise ShapeError(f"gradient injected at {name!r} has shape {tuple(grad.shape)}, "
                                 f"expected {expected} (that layer's output)")
        if isinstance(capture, str):
            capture = [capture]
        wanted = {name: self._require(name) for name in capture}
        for name, target in wanted.items():
            if target not in last.output_shapes:
                raise ValueError(f"cannot capture the gradient at {name!r}: the last forward pass "
                                 f"stopped at {last.stop_at!r} before reaching it")
        run = _Pass(inject=inject, capture=wanted.values())
        layers = list(self.layers())
        saved = [layer.param_grads for layer in layers]
        first = next(iter(self.children.values()))  # the layer that sees the input, if a layer
        first = first if isinstance(first, Layer) else None
        first_saved = first is not None and first.input_grad
        xp = get_array_module(*inject.values())
        try:
            for layer in layers:
                layer.param_grads = layer.param_grads and param_grads
                if not layer.param_grads:  # stale gradients must not reach an optimizer step
                    layer.grads = {}
            if first is not None:
                first.input_grad = input_grad
            with whole_pass(last.images, xp):
                dx, _ = self.run_backward(run, None)
        finally:
            for layer, flag in zip(layers, saved):
                layer.param_grads = flag
            if first is not None:
                first.input_grad = first_saved
        if not input_grad:
            dx = None
        if not wanted:
            return dx
        grads = {}
        dtype = next(iter(inject.values())).dtype
        for name, target in wanted.items():
            grad = run.activations.get(target)
            grads[name] = (xp.zeros(last.output_shapes[target], dtype=dtype)
                           if grad is None else grad)
        return dx, grads

    # -- whole-network switches ---------------------------------------------
    def set_relu_mode(self, mode):
        """Set the backward rule of every ReLU: 'normal', 'guided' or 'deconv'."""
        check_relu_mode(mode)
        for layer in self.layers():
            if isinstance(layer, ReLU):
                layer.mode = mode
        return self

    def parameters(self):
        """(layer, key) for every trainable array, in forward order."""
        return [(layer, key) for layer in self.layers() for key in layer.params]

    def state_dict(self):
        """``{'<layer>.<key>': array}`` for every parameter and buffer."""
        state = {}
        for layer in self.layers():
            for store in (layer.params, layer.buffers):
                for key, value in store.items():
                    state[f"{layer.name}.{key}"] = value
        return state

    def load_state_dict(self, state, strict=True):
        """Copy arrays into the network, checking every name and shape.

        Arrays are cast to the dtype of the array they replace and stay on the
        CPU (call ``to('gpu')`` afterwards). With ``strict`` every parameter and
        buffer must be given and nothing else.
        """
        slots = {}
        for layer in self.layers():
            for store in (layer.params, layer.buffers):
                for key in store:
                    slots[f"{layer.name}.{key}"] = (layer, store, key)
        unknown = sorted(set(state) - set(slots))
        missing = sorted(set(slots) - set(state))
        if strict and (unknown or missing):
            parts = []
            if missing:
                parts.append(f"missing {len(missing)}: {', '.join(missing[:8])}"
                             + (" ..." if len(missing) > 8 else ""))
            if unknown:
                parts.append(f"unexpected {len(unknown)}: {', '.join(unknown[:8])}"
                             + (" ..." if len(unknown) > 8 else ""))
            raise KeyError("weights do not match the network (" + "; ".join(parts) + ")")
        for name, value in state.items():
            if name not in slots:
                continue
            layer, store, key = slots[name]
            value = np.asarray(value)
            if value.shape != store[key].shape:
                raise ShapeError(f"{layer._describe()}: {key} has shape {tuple(store[key].shape)} "
                                 f"in the network but {tuple(value.shape)} in the weights")
            store[key] = value.astype(store[key].dtype)
            layer.grads = {}
        return self

    def num_parameters(self):
        return sum(int(layer.params[key].size) for layer, key in self.parameters())

    def zero_grad(self):
        for layer in self.layers():
            layer.zero_grad()
        return self

    def train(self):
        for layer in self.layers():
            layer.train()
        return self

    def eval(self):
        for layer in self.layers():
            layer.eval()
        return self

    def array_module(self):
        """``numpy`` or ``cupy``: where the parameters live, so inputs can follow."""
        return get_array_module(*(p for layer in self.layers() for p in layer.params.values()))

    def to(self, device):
        """Move every layer to ``'cpu'`` or ``'gpu'`` (CuPy)."""
        for layer in self.layers():
            layer.to(device)
        self._last = None
        return self

    def astype(self, dtype):
        """Cast every parameter and buffer (float64 for gradient checks)."""
        for layer in self.layers():
            layer.astype(dtype)
        self._last = None
        return self
