"""Training package for GAF checkpoints in the published format
(``python -m gaf_trt.training train|precompute|evaluate|bundle``).

Imported on demand only: ``import gaf_trt`` never loads it (the digits data and the quality
gate need scikit-learn, ``pip install 'gaf-trt[train]'``).
"""

from gaf_trt.training.config import PRESETS, TrainConfig, build_config
from gaf_trt.training.trainer import TrainingDiverged, TrainResult, TrainState, train

__all__ = ["PRESETS", "TrainConfig", "build_config", "train", "TrainResult", "TrainState",
           "TrainingDiverged"]
