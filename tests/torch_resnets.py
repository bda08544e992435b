"""Hand-written torch.nn ResNets, the test oracle for minicnn.models.

Written from the papers and the torchvision / Keras / Caffe definitions with
torchvision's names (``layer1.0.conv1``, ``layer1.0.downsample.0``), not
minicnn's, so :func:`load_minicnn_state` maps every name explicitly and a naming
mistake on either side shows up as a missing or unused tensor. Test helper only.
"""
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from foreign_files import caffe_block_name

VARIANTS = {  # conv bias, BN eps, pool1 (padding, ceil_mode), bottleneck stride on the 1x1
    "caffe": dict(bias=True, eps=1e-5, pool=(0, True), stride_on_1x1=True),
    "torchvision": dict(bias=False, eps=1e-5, pool=(1, False), stride_on_1x1=False),
    "keras": dict(bias=True, eps=1.001e-5, pool=(1, False), stride_on_1x1=True),
}
DEPTHS = {18: ("basic", [2, 2, 2, 2]), 34: ("basic", [3, 4, 6, 3]),
          50: ("bottleneck", [3, 4, 6, 3]), 101: ("bottleneck", [3, 4, 23, 3]),
          152: ("bottleneck", [3, 8, 36, 3])}


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin, planes, stride, bias, eps, stride_on_1x1=None):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=bias)
        self.bn1 = nn.BatchNorm2d(planes, eps=eps)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=bias)
        self.bn2 = nn.BatchNorm2d(planes, eps=eps)
        self.downsample = None
        if stride != 1 or cin != planes:
            self.downsample = nn.Sequential(nn.Conv2d(cin, planes, 1, stride, bias=bias),
                                            nn.BatchNorm2d(planes, eps=eps))

    def forward(self, x):
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(out + (x if self.downsample is None else self.downsample(x)))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin, planes, stride, bias, eps, stride_on_1x1):
        super().__init__()
        s1, s3 = (stride, 1) if stride_on_1x1 else (1, stride)
        self.conv1 = nn.Conv2d(cin, planes, 1, s1, bias=bias)
        self.bn1 = nn.BatchNorm2d(planes, eps=eps)
        self.conv2 = nn.Conv2d(planes, planes, 3, s3, 1, bias=bias)
        self.bn2 = nn.BatchNorm2d(planes, eps=eps)
        self.conv3 = nn.Conv2d(planes, 4 * planes, 1, bias=bias)
        self.bn3 = nn.BatchNorm2d(4 * planes, eps=eps)
        self.downsample = None
        if stride != 1 or cin != 4 * planes:
            self.downsample = nn.Sequential(nn.Conv2d(cin, 4 * planes, 1, stride, bias=bias),
                                            nn.BatchNorm2d(4 * planes, eps=eps))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + (x if self.downsample is None else self.downsample(x)))


class TorchResNet(nn.Module):
    def __init__(self, depth, variant="torchvision", num_classes=1000):
        super().__init__()
        v = VARIANTS[variant]
        kind, counts = DEPTHS[depth]
        block = BasicBlock if kind == "basic" else Bottleneck
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=v["bias"])
        self.bn1 = nn.BatchNorm2d(64, eps=v["eps"])
        self.maxpool = nn.MaxPool2d(3, 2, padding=v["pool"][0], ceil_mode=v["pool"][1])
        cin = 64
        for i, (planes, count) in enumerate(zip([64, 128, 256, 512], counts)):
            blocks = []
            for j in range(count):
                stride = 2 if i > 0 and j == 0 else 1
                blocks.append(block(cin, planes, stride, v["bias"], v["eps"], v["stride_on_1x1"]))
                cin = planes * block.expansion
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(x.mean(dim=(2, 3)))


class CifarBlock(nn.Module):
    def __init__(self, cin, planes, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.pad = planes // 4 if stride != 1 or cin != planes else None

    def forward(self, x):
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        if self.pad is not None:  # option A, as in akamaster/pytorch_resnet_cifar10
            x = F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))
        return F.relu(out + x)


class TorchCifarResNet(nn.Module):
    def __init__(self, depth, num_classes=10):
        super().__init__()
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        cin = 16
        for i, planes in enumerate([16, 32, 64]):
            blocks = []
            for j in range(n):
                blocks.append(CifarBlock(cin, planes, 2 if i > 0 and j == 0 else 1))
                cin = planes
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(x.mean(dim=(2, 3)))


BLOCK_CHILDREN = {"conv1": "branch2a", "bn1": "bn2a", "conv2": "branch2b", "bn2": "bn2b",
                  "conv3": "branch2c", "bn3": "bn2c", "downsample.0": "branch1",
                  "downsample.1": "bn1"}
TOP_LEVEL = {"conv1": "conv1", "bn1": "bn_conv1", "fc": "fc"}


def torch_to_minicnn_name(name, depth):
    """'layer3.22.downsample.1.running_var' -> 'res4b22.bn1.running_var'."""
    module, key = name.rsplit(".", 1)
    if module in TOP_LEVEL:
        return f"{TOP_LEVEL[module]}.{key}"
    layer, index, child = module.split(".", 2)
    block = caffe_block_name(depth, int(layer[len("layer"):]) + 1, int(index))
    return f"{block}.{BLOCK_CHILDREN[child]}.{key}"


def load_minicnn_state(model, state, depth):
    """Copy a minicnn state_dict (NumPy arrays) into ``model``; every tensor exactly once."""
    used = set()
    with torch.no_grad():
        for name, tensor in list(model.named_parameters()) + list(model.named_buffers()):
            if name.endswith("num_batches_tracked"):
                continue
            source = torch_to_minicnn_name(name, depth)
            value = torch.from_numpy(np.ascontiguousarray(state[source]))
            assert tuple(value.shape) == tuple(tensor.shape), (name, source)
            tensor.copy_(value)
            used.add(source)
    unused = set(state) - used
    assert not unused, f"minicnn tensors with no torch counterpart: {sorted(unused)[:5]}"
    return model


def randomize_torch(model, seed=0):
    """Draw every weight of ``model`` from ``seed`` alone, keeping activations O(1).

    He-normal conv weights, non-trivial BN statistics and biases; the last
    batch norm of every residual branch gets a small gamma so that the sum of
    branch and shortcut does not grow with depth. Returns the model in eval mode.
    """
    g = torch.Generator().manual_seed(seed)

    def uniform(n, low, high):
        return low + (high - low) * torch.rand(n, generator=g)
    last = set()
    for module in model.modules():
        if isinstance(module, (BasicBlock, Bottleneck, CifarBlock)):
            last.add(id(module.bn3 if isinstance(module, Bottleneck) else module.bn2))
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                n = module.num_features
                module.weight.copy_(uniform(n, 0.1, 0.3) if id(module) in last
                                    else uniform(n, 0.5, 1.5))
                module.bias.copy_(0.1 * torch.randn(n, generator=g))
                module.running_mean.copy_(0.1 * torch.randn(n, generator=g))
                module.running_var.copy_(uniform(n, 0.5, 2.0))
            elif isinstance(module, (nn.Conv2d, nn.Linear)):
                weight = module.weight
                gain = 2.0 if isinstance(module, nn.Conv2d) else 1.0
                weight.copy_(torch.randn(weight.shape, generator=g)
                             * (gain / weight[0].numel()) ** 0.5)
            if isinstance(module, (nn.Conv2d, nn.Linear)) and module.bias is not None:
                module.bias.copy_(0.1 * torch.randn(module.bias.shape, generator=g))
    return model.eval()


def assert_close(ours, ref, rtol=1e-4):
    """Within ``rtol``, and an atol of ``rtol / 10`` of the largest value (for the zeros)."""
    ref = ref.detach().numpy() if isinstance(ref, torch.Tensor) else ref
    np.testing.assert_allclose(ours, ref, rtol=rtol, atol=0.1 * rtol * np.abs(ref).max())
