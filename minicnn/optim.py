r"""Optimizers that update a network's parameters in place from its gradients.

SGD with momentum (PyTorch's form, with weight decay added to the gradient):

.. math::
    g \leftarrow g + \lambda p, \quad v \leftarrow \mu v + g, \quad p \leftarrow p - \eta v

Adam (Kingma & Ba 2015), with bias-corrected moment estimates at step t:

.. math::
    m \leftarrow \beta_1 m + (1-\beta_1) g, \quad s \leftarrow \beta_2 s + (1-\beta_2) g^2, \quad
    p \leftarrow p - \eta \frac{m / (1-\beta_1^t)}{\sqrt{s / (1-\beta_2^t)} + \epsilon}
"""
from .backend import get_array_module


class Optimizer:
    def __init__(self, net, lr):
        if lr <= 0:
            raise ValueError(f"learning rate must be positive, received {lr}")
        self.net = net
        self.lr = float(lr)
        self.state = {}

    def _gradients(self):
        for layer, key in self.net.parameters():
            if key not in layer.grads:
                raise RuntimeError(f"{layer.name}: no gradient for {key!r}; run backward with "
                                   "param_grads=True before step()")
            yield layer, key, layer.params[key], layer.grads[key]

    def zero_grad(self):
        self.net.zero_grad()


class SGD(Optimizer):
    def __init__(self, net, lr=0.01, momentum=0.9, weight_decay=0.0):
        super().__init__(net, lr)
        self.momentum, self.weight_decay = float(momentum), float(weight_decay)

    def step(self):
        for layer, key, p, g in self._gradients():
            if self.weight_decay:
                g = g + self.weight_decay * p
            slot = (id(layer), key)
            v = self.state.get(slot)
            if v is None:
                v = self.state[slot] = g.copy()
            else:  # v = momentum v + g, in place
                v *= self.momentum
                v += g
            p -= self.lr * v


class Adam(Optimizer):
    def __init__(self, net, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(net, lr)
        self.beta1, self.beta2 = map(float, betas)
        self.eps, self.weight_decay = float(eps), float(weight_decay)
        self.t = 0

    def step(self):
        self.t += 1
        c1, c2 = 1 - self.beta1 ** self.t, 1 - self.beta2 ** self.t
        for layer, key, p, g in self._gradients():
            xp = get_array_module(p)
            if self.weight_decay:
                g = g + self.weight_decay * p
            slot = (id(layer), key)
            m, s = self.state.get(slot, (xp.zeros_like(p), xp.zeros_like(p)))
            m = self.beta1 * m + (1 - self.beta1) * g
            s = self.beta2 * s + (1 - self.beta2) * g * g
            self.state[slot] = (m, s)
            p -= self.lr * (m / c1) / (xp.sqrt(s / c2) + self.eps)
