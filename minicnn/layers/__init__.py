"""The layer library: one file per family, each a forward/backward pair."""
from .base import Layer, ShapeError
from .conv import Conv2d, im2col, col2im
from .pooling import MaxPool2d, AvgPool2d, GlobalAvgPool2d
from .normalization import BatchNorm2d, fold_into_conv
from .activation import ReLU, RELU_MODES
from .linear import Linear, Flatten
from .residual import Add, ChannelPadShortcut
from .loss import SoftmaxCrossEntropy, softmax, log_softmax

__all__ = ["Layer", "ShapeError", "Conv2d", "im2col", "col2im", "MaxPool2d", "AvgPool2d",
           "GlobalAvgPool2d", "BatchNorm2d", "fold_into_conv", "ReLU", "RELU_MODES", "Linear",
           "Flatten", "Add", "ChannelPadShortcut", "SoftmaxCrossEntropy", "softmax", "log_softmax"]
