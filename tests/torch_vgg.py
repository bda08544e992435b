"""A hand-written torch VGG-16/19 whose state-dict keys are torchvision's (test helper).

``features`` holds every conv (3x3, padding 1), ReLU and 2x2 max pool in order;
``classifier`` is Linear, ReLU, Dropout, Linear, ReLU, Dropout, Linear, so the
weights are ``features.0.weight`` ... ``classifier.6.bias`` as in torchvision's
vgg16-397923af.pth. ``channels`` and ``hidden`` make a narrower VGG of the same
layout for quick tests. Written from the paper's configurations D and E.
"""
import torch
from torch import nn

CONFIGS = {16: (2, 2, 3, 3, 3), 19: (2, 2, 4, 4, 4)}


class TorchVGG(nn.Module):
    def __init__(self, depth, num_classes=1000, channels=(64, 128, 256, 512, 512), hidden=4096):
        super().__init__()
        modules, cin = [], 3
        for count, width in zip(CONFIGS[depth], channels):
            for _ in range(count):
                modules += [nn.Conv2d(cin, width, 3, padding=1), nn.ReLU(inplace=True)]
                cin = width
            modules.append(nn.MaxPool2d(2, 2))
        self.features = nn.Sequential(*modules)
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))  # torchvision's; the identity at 224
        self.classifier = nn.Sequential(
            nn.Linear(cin * 7 * 7, hidden), nn.ReLU(inplace=True), nn.Dropout(),
            nn.Linear(hidden, hidden), nn.ReLU(inplace=True), nn.Dropout(),
            nn.Linear(hidden, num_classes))

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))
