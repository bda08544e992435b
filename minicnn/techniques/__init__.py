"""The techniques floor: ways to see inside a trained ConvNet.

One module per technique, each a function of arrays (NumPy or CuPy, NCHW
batches in the network's input space) returning arrays; figures are in
:mod:`minicnn.plots`. The pieces they share live here: targets and
:func:`input_gradient` (:mod:`.targets`) and receptive fields
(:mod:`.receptive_field`).
"""
from .targets import (input_gradient, backprop_target, parse_target, using_relu_mode, check_batch,
                      Target, Backprop)
from .receptive_field import receptive_field, field_box, layer_size, ReceptiveField
from .saliency import (saliency_map, vanilla_gradient, guided_backprop, deconvnet, smoothgrad,
                       integrated_gradients, completeness_gap)
from .grad_cam import grad_cam, upsample, guided_grad_cam
from .class_model import class_model, class_model_objective
from .inversion import invert, inversion_objective, code_error, compare_optimizers
from .dream import make_step, dream, dream_objective
from .style import (style_transfer, style_objective, style_loss, content_loss, gram_matrix,
                    style_statistic)

__all__ = ["input_gradient", "backprop_target", "parse_target", "using_relu_mode", "check_batch",
           "Target", "Backprop", "receptive_field", "field_box", "layer_size", "ReceptiveField"]
__all__ += ["saliency_map", "vanilla_gradient", "guided_backprop", "deconvnet", "smoothgrad",
            "integrated_gradients", "completeness_gap", "grad_cam", "upsample", "guided_grad_cam"]
from . import adversarial
from .adversarial import (fool_linear, fgsm, pgd, fooling_image, deepfool, carlini_wagner_l2,
                          robust_accuracy, transfer_matrix, multicrop_predict, PixelModel)
__all__ += ["adversarial", "fool_linear", "fgsm", "pgd", "fooling_image", "deepfool",
            "carlini_wagner_l2", "robust_accuracy", "transfer_matrix", "multicrop_predict",
            "PixelModel"]
from .codes import codes, embed, grid_assignment, knn_accuracy
from .grabcut import grabcut, grabcut_energy
__all__ += ["codes", "embed", "grid_assignment", "knn_accuracy", "grabcut", "grabcut_energy"]
from .filters import first_layer_filters
from .activations import activations, stage_activations, strongest_channels, overview_layers
from .top_patches import top_patches, patch_projections, Patch
from .occlusion import occlusion_map
__all__ += ["first_layer_filters", "activations", "stage_activations", "strongest_channels",
            "overview_layers", "top_patches", "patch_projections", "Patch", "occlusion_map"]
__all__ += ["class_model", "class_model_objective", "invert", "inversion_objective", "code_error",
            "compare_optimizers", "make_step", "dream", "dream_objective", "style_transfer",
            "style_objective", "style_loss", "content_loss", "gram_matrix", "style_statistic"]
