"""The optimization core shared by class models, inversion, DeepDream, neural style
and the iterative attacks.

* objectives (:mod:`.objective`, :mod:`.network_objectives`): functions
  ``x -> (loss, dloss/dx)`` that add and scale;
* priors with gradients (:mod:`.regularizers`): L2, alpha-norm, TV^(beta/2);
* image moves (:mod:`.image_moves`): jitter, blur, the valid pixel range;
* step rules (:mod:`.optimizers`): fixed step, DeepDream's normalized step, Adam;
* the loop (:mod:`.loop`): :func:`minimize`, with L-BFGS-B through scipy.
"""
from .objective import Objective, as_objective
from .regularizers import (l2, alpha_norm_value, total_variation_value, l2_norm, alpha_norm,
                           total_variation)
from .image_moves import (roll, random_shift, gaussian_blur, pixel_range, valid_range,
                          clip_to_range, random_image, preprocessing_of)
from .optimizers import GradientStep, NormalizedStep, Adam, make_optimizer
from .network_objectives import (target_score, activation_objective, deepest,
                                 network_dtype)
from .loop import minimize, History, checked_evaluation, as_rng, check_steps

__all__ = ["Objective", "as_objective", "l2", "alpha_norm_value", "total_variation_value",
           "l2_norm", "alpha_norm", "total_variation", "roll", "random_shift", "gaussian_blur",
           "pixel_range", "valid_range", "clip_to_range", "random_image", "preprocessing_of",
           "GradientStep", "NormalizedStep", "Adam", "make_optimizer", "target_score",
           "activation_objective", "deepest", "network_dtype", "minimize", "History",
           "checked_evaluation", "as_rng", "check_steps"]
