"""Adversarial examples: the linear explanation, attacks, evaluation, defences.

Attacks work in pixel space (:mod:`.pixel_space`): images in [0, 1] RGB,
(N, 3, H, W), before the weights file's preprocessing, which is applied inside
and differentiated through, so ``eps = 8/255`` is eight grey levels for every
model. One module per idea: :mod:`.linear` (Goodfellow's linear explanation),
:mod:`.attacks` (FGSM, PGD), :mod:`.fooling` (fooling images), :mod:`.deepfool`,
:mod:`.carlini_wagner`, :mod:`.evaluation` (robust accuracy, transfer),
:mod:`.defences` (multi-crop), :mod:`.training` (adversarial training).
"""
from .pixel_space import PixelModel, pixel_model, check_images, images_from_pixels
from .linear import fool_linear, linear_epsilon, epsilon_by_dimension, linear_example
from .attacks import fgsm, pgd
from .fooling import fooling_image
from .deepfool import deepfool
from .carlini_wagner import carlini_wagner_l2
from .evaluation import robust_accuracy, transfer_matrix, predict_classes, EPS_LIST
from .defences import MultiCropModel, multicrop_predict
from .training import adversarial_training, with_extra_class, extra_class_defence

__all__ = ["PixelModel", "pixel_model", "check_images", "images_from_pixels", "fool_linear",
           "linear_epsilon", "epsilon_by_dimension", "linear_example", "fgsm", "pgd",
           "fooling_image", "deepfool", "carlini_wagner_l2", "robust_accuracy", "transfer_matrix",
           "predict_classes", "EPS_LIST", "MultiCropModel", "multicrop_predict",
           "adversarial_training", "with_extra_class", "extra_class_defence"]
