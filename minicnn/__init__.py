"""minicnn: a CNN engine written from scratch on NumPy, readable end to end.

Every layer has a hand-written forward and backward pass; the same code runs on
CuPy arrays on a GPU. See the README for the API.
"""
from .backend import get_array_module, to_gpu, to_cpu, gpu_available, BackendError
from .layers import (Conv2d, ReLU, MaxPool2d, AvgPool2d, GlobalAvgPool2d, BatchNorm2d, Linear,
                     Flatten, Add, ChannelPadShortcut, SoftmaxCrossEntropy, softmax, ShapeError)
from .network import Network, Sequential, Residual
from .layers.threads import set_num_threads, get_num_threads
from .optim import SGD, Adam
from .models import build
from .io.model_file import load, save

__version__ = "0.1.0"

__all__ = ["get_array_module", "to_gpu", "to_cpu", "gpu_available", "BackendError", "Conv2d",
           "ReLU", "MaxPool2d", "AvgPool2d", "GlobalAvgPool2d", "BatchNorm2d", "Linear", "Flatten",
           "Add", "ChannelPadShortcut", "SoftmaxCrossEntropy", "softmax", "ShapeError", "Network",
           "Sequential", "Residual", "SGD", "Adam", "build", "load", "save", "set_num_threads",
           "get_num_threads"]
