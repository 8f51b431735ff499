"""plw.loss: the exact prompt-loss-weighted cross-entropy (reference and fused chunked engine)."""

from .common import IGNORE_INDEX, NORMALIZERS, LossOutput, check_values, normalizer_value
from .linear import BACKENDS, STRATEGIES, linear_cross_entropy
from .reference import weighted_cross_entropy

__all__ = ["IGNORE_INDEX", "NORMALIZERS", "BACKENDS", "STRATEGIES", "LossOutput", "normalizer_value", "check_values",
           "weighted_cross_entropy", "linear_cross_entropy"]
