"""Training package for GAF checkpoints in the published format (``python -m training``)."""

from training.config import PRESETS, TrainConfig, build_config
from training.trainer import TrainResult, TrainState, train

__all__ = ["PRESETS", "TrainConfig", "build_config", "train", "TrainResult", "TrainState"]
