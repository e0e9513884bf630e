"""The GAF network, its configuration and checkpoint I/O."""

from gaf_trt.model.checkpoint import (
    infer_config,
    load_model,
    read_checkpoint,
    save_safetensors,
)
from gaf_trt.model.config import DIT_PRESETS, GAFConfig, preset_config
from gaf_trt.model.gaf import GAF

__all__ = ["GAF", "GAFConfig", "DIT_PRESETS", "preset_config", "load_model", "read_checkpoint",
           "save_safetensors", "infer_config"]
