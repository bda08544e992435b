"""Readers for weights saved by other frameworks, and their mapping onto minicnn.

Readers turn a foreign file into plain NumPy data, with no foreign library:

* :func:`read_torch_checkpoint` - ``torch.save`` files (zip and legacy), read
  with a restricted unpickler: ``{name: array}``;
* :func:`read_keras_h5` - Keras 1/2 HDF5 weights: ``{layer: {weight: array}}``;
* :func:`read_caffemodel` - Caffe ``.caffemodel`` protobuf: ``[CaffeLayer]``.

:mod:`minicnn.io.resnet_names` holds minicnn's ResNet names and shapes and
recognizes an architecture from foreign names; the functions of
:mod:`minicnn.io.mapping` rename and transpose what the readers return into
minicnn ResNet state dicts, ready for ``Network.load_state_dict``.
"""
from .errors import WeightsFormatError, UnsafeCheckpointError
from .torch_checkpoint import read_torch_checkpoint
from .keras_h5 import read_keras_h5
from .caffemodel import read_caffemodel, CaffeLayer
from .resnet_names import (ResNetArch, infer_resnet_arch, infer_torch_arch, infer_keras_arch,
                           infer_caffe_arch, is_keras1, arch_name, resnet_state_keys,
                           resnet_state_shapes, cifar_state_keys, cifar_state_shapes)
from .mapping import (torchvision_resnet_to_minicnn, cifar_resnet_to_minicnn,
                      keras1_resnet_to_minicnn, keras_resnet_to_minicnn, caffe_resnet_to_minicnn)

__all__ = ["WeightsFormatError", "UnsafeCheckpointError", "read_torch_checkpoint",
           "read_keras_h5", "read_caffemodel", "CaffeLayer", "ResNetArch", "infer_resnet_arch",
           "infer_torch_arch", "infer_keras_arch", "infer_caffe_arch", "is_keras1", "arch_name",
           "resnet_state_keys", "resnet_state_shapes", "cifar_state_keys", "cifar_state_shapes",
           "torchvision_resnet_to_minicnn", "cifar_resnet_to_minicnn", "keras1_resnet_to_minicnn",
           "keras_resnet_to_minicnn", "caffe_resnet_to_minicnn"]
