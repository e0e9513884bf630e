"""Model size presets with random weights (``gaf-trt bench --preset``, the benchmarks): a
DiT preset's published initialisation with every block made to contribute."""

from __future__ import annotations

import torch

from gaf_trt.errors import ConfigError
from gaf_trt.model.config import DIT_PRESETS, preset_config
from gaf_trt.model.gaf import GAF


def parse_preset(name: str) -> tuple[str, int]:
    """``"XL/2"`` -> ``("XL", 2)``; a clear error for anything else."""
    size, _, patch = str(name).upper().partition("/")
    if size not in DIT_PRESETS or patch not in ("2", "4", "8"):
        raise ConfigError(f"unknown preset {name!r}; valid: "
                          + ", ".join(f"{s}/{p}" for s in DIT_PRESETS for p in (2, 4, 8)))
    return size, int(patch)



def preset_model(preset: str, latent: int, channels: int, num_classes: int, seed: int,
                 device: str) -> GAF:
    """Random-weight fp32 model of a DiT preset: the published initialisation, then the
    zero-initialised adaLN and J-head weights drawn N(0, 0.02) so every block contributes
    (with adaLN-Zero the blocks would be identities and precision error would go unseen)."""
    size, patch = parse_preset(preset)
    if latent % patch:
        raise ConfigError(f"--latent {latent} is not a multiple of the preset's patch {patch}")
    cfg = preset_config(size, patch_size=patch, input_size=latent, in_channels=channels,
                        num_classes=num_classes)
    torch.manual_seed(seed)
    with torch.device(device):
        model = GAF(cfg)
    model.initialize_weights()
    with torch.no_grad():
        for mod in [*(b.adaLN_modulation for b in model.trunk.blocks),
                    model.trunk.ada_ln.adaLN_modulation]:
            mod[-1].weight.normal_(std=0.02)
        model.twins.J.linear.weight.normal_(std=0.02)
    return model.eval()


