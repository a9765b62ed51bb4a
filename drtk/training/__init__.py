"""Rebuilding refusal: training data, one training loop for refusal / recovery / DeepRefusal, export.

Example:
    >>> from drtk.training import TrainConfig, Trainer, build_training_set       # doctest: +SKIP
    >>> data = build_training_set(model, harmful=h, harmless=b, config=cfg.data)  # doctest: +SKIP
    >>> cfg = TrainConfig.for_method("deeprefusal", steps=100)                    # doctest: +SKIP
    >>> result = Trainer(model, data, cfg, direction=direction).train()          # doctest: +SKIP
"""

from drtk.training.callbacks import DirectionDrift, LivePlot, RefusalProbe
from drtk.training.config import METHODS, TrainConfig, default_latent_layers
from drtk.training.data import (
    DataConfig, Example, GenerationCache, TrainBatch, TrainingSet, build_training_set, collate, encode_example, end_of_turn_ids,
    helpful_examples, recovery_examples, refusal_examples, with_contrast, with_transitions,
)
from drtk.training.directions import DirectionProvider, FixedDirection, RefreshedDirection
from drtk.training.export import save_adapter, save_merged, save_training_record
from drtk.training.loop import Callback, Trainer, TrainResult, train

__all__ = [
    "METHODS", "Callback", "DataConfig", "DirectionDrift", "DirectionProvider", "Example", "FixedDirection",
    "GenerationCache", "LivePlot", "RefreshedDirection", "RefusalProbe", "TrainBatch", "TrainConfig", "TrainResult", "Trainer",
    "TrainingSet", "build_training_set", "collate", "encode_example", "end_of_turn_ids", "helpful_examples",
    "default_latent_layers", "recovery_examples", "refusal_examples", "save_adapter", "save_merged", "save_training_record", "train",
    "with_contrast", "with_transitions",
]
