"""Checkpoint I/O: published ``.pt`` files, bare state dicts, and gaf-trt safetensors.

Every ``.pt`` file is read with ``torch.load(weights_only=True)``; a file that needs arbitrary
unpickling is refused unless the caller passes ``trust_pickle=True`` explicitly.
"""

from __future__ import annotations

import json
import logging
import math
import os
import pickle
import re
import warnings
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from gaf_trt.errors import CheckpointError, ConfigError
from gaf_trt.io.files import atomic_write
from gaf_trt.model.config import GAFConfig, default_heads
from gaf_trt.model.gaf import GAF

log = logging.getLogger(__name__)

PREFIXES = ("_orig_mod.", "module.")
CONFIG_METADATA_KEY = "gaf_config"

#: Keys every GAF state dict has (block keys are checked through ``blocks.0``).
REQUIRED_KEYS = (
    "trunk.x_embedder.proj.weight", "trunk.x_embedder.proj.bias", "trunk.pos_embed",
    "trunk.t_embedder.mlp.0.weight", "trunk.t_embedder.mlp.2.weight",
    "trunk.y_embedder.embedding_table.weight",
    "trunk.blocks.0.attn.qkv.weight", "trunk.blocks.0.mlp.fc1.weight",
    "trunk.blocks.0.adaLN_modulation.1.weight",
    "trunk.ada_ln.adaLN_modulation.1.weight",
    "twins.J.linear.weight", "twins.K.weight", "twins.K.bias",
)

#: Bundled models, loadable by name (``load_model("digits")``).
BUNDLED = {"digits": "digits.safetensors"}


@dataclass(frozen=True)
class LoadedCheckpoint:
    """A state dict ready for :class:`GAF`, with where it came from."""

    state_dict: dict[str, Tensor]
    cfg: dict[str, Any]
    source: str  # "ema", "model", "state_dict" or "safetensors"
    path: Path


def strip_prefixes(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Remove ``_orig_mod.`` / ``module.`` prefixes, repeatedly and in any order."""
    out = {}
    for key, value in state_dict.items():
        changed = True
        while changed:
            changed = False
            for prefix in PREFIXES:
                if key.startswith(prefix):
                    key = key[len(prefix):]
                    changed = True
        out[key] = value
    return out


def resolve_path(path: str | os.PathLike[str]) -> Path:
    """Map a bundled model name to its file; otherwise return the path unchanged."""
    if isinstance(path, str) and path in BUNDLED:
        ref = resources.files("gaf_trt") / "assets" / BUNDLED[path]
        p = Path(str(ref))
        if not p.is_file():
            raise CheckpointError(f"bundled model {path!r} is missing from this install ({p})")
        return p
    return Path(path)


def _torch_load(path: Path, trust_pickle: bool) -> Any:
    try:
        with warnings.catch_warnings():  # a protocol-4+ pickle: torch warns, then loads or
            # fails; either way the outcome (or our one error line) says all there is
            warnings.filterwarnings("ignore", message="Detected pickle protocol",
                                    category=UserWarning)
            return torch.load(path, map_location="cpu", weights_only=not trust_pickle)
    except pickle.UnpicklingError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        if "weights_only" in str(err) or "Unsupported global" in str(err):
            raise CheckpointError(
                f"checkpoint {path} needs arbitrary unpickling ({first[:160]}); load it with "
                "trust_pickle=True (CLI: --trust-pickle) only if you trust its source") from None
        raise CheckpointError(f"checkpoint {path} is corrupt: {first[:200]}") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError,
            AttributeError, KeyError, IndexError) as err:
        msg = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(
            f"checkpoint {path} is truncated or corrupt: {msg[:200]}") from None


def _read_safetensors(path: Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    from safetensors import SafetensorError, safe_open

    try:
        tensors = {}
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            for key in f.keys():
                tensors[key] = f.get_tensor(key)
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"safetensors file {path} is truncated or corrupt: "
                              f"{str(err).splitlines()[0][:200]}") from None
    cfg: dict[str, Any] = {}
    if CONFIG_METADATA_KEY in meta:
        try:
            cfg = json.loads(meta[CONFIG_METADATA_KEY])
        except json.JSONDecodeError as err:
            raise CheckpointError(f"{path}: metadata {CONFIG_METADATA_KEY!r} is not JSON: {err}")
    return tensors, cfg


def read_checkpoint(path: str | os.PathLike[str], *, use_ema: bool = True,
                    trust_pickle: bool = False) -> LoadedCheckpoint:
    """Read any supported checkpoint form into a prefix-free state dict and its cfg."""
    p = resolve_path(path)
    if not p.exists():
        raise CheckpointError(f"checkpoint not found: {p}")
    if not p.is_file():
        if (p / "manifest.json").is_file():
            raise CheckpointError(f"{p} is an engine directory, not a checkpoint: load it with "
                                  "--backend ort, trt or auto (Python: gaf_trt.load_engine)")
        raise CheckpointError(f"checkpoint is not a file: {p}")
    if p.suffix == ".safetensors":
        sd, cfg = _read_safetensors(p)
        return LoadedCheckpoint(strip_prefixes(sd), cfg, "safetensors", p)
    obj = _torch_load(p, trust_pickle)
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{p} is not a GAF checkpoint: it holds a "
                              f"{type(obj).__name__}, not a dict")
    cfg = obj.get("cfg") if isinstance(obj.get("cfg"), Mapping) else {}
    if use_ema and isinstance(obj.get("ema"), Mapping):
        sd, source = obj["ema"], "ema"
    elif isinstance(obj.get("model"), Mapping):
        sd, source = obj["model"], "model"
    elif isinstance(obj.get("state_dict"), Mapping):
        sd, source = obj["state_dict"], "state_dict"
    elif obj and all(isinstance(v, Tensor) for v in obj.values()):
        sd, source = obj, "state_dict"
    else:
        raise CheckpointError(f"{p} is not a GAF checkpoint: no 'ema', 'model' or tensor state "
                              f"dict (top-level keys: {', '.join(map(str, list(obj)[:8]))})")
    sd = {k: v for k, v in sd.items() if isinstance(v, Tensor)}
    return LoadedCheckpoint(strip_prefixes(sd), dict(cfg), source, p)


def check_gaf_keys(state_dict: Mapping[str, Tensor], where: str) -> None:
    """Raise a :class:`CheckpointError` naming the missing keys of a non-GAF state dict."""
    missing = [k for k in REQUIRED_KEYS if k not in state_dict]
    if not missing:
        return
    hint = ""
    if "final_layer.linear.weight" in state_dict or "x_embedder.proj.weight" in state_dict:
        hint = " (it looks like a DiT checkpoint: use it to seed training with --retrunk)"
    raise CheckpointError(f"{where} is not a GAF checkpoint: missing keys "
                          f"{', '.join(missing[:6])}{' …' if len(missing) > 6 else ''}{hint}")


def infer_config(state_dict: Mapping[str, Tensor], cfg: Mapping[str, Any] | None = None, *,
                 num_heads: int | None = None) -> GAFConfig:
    """Derive the architecture from tensor shapes; heads from the argument, cfg or convention."""
    cfg = dict(cfg or {})
    proj = state_dict["trunk.x_embedder.proj.weight"]  # [D, C, p, p]
    hidden, channels, patch = proj.shape[0], proj.shape[1], proj.shape[2]
    tokens = state_dict["trunk.pos_embed"].shape[1]
    grid = int(round(tokens ** 0.5))
    if grid * grid != tokens:
        raise CheckpointError(f"pos_embed has {tokens} tokens, not a square grid")
    block_ids = {int(m.group(1)) for k in state_dict
                 if (m := re.match(r"trunk\.blocks\.(\d+)\.", k))}
    depth = len(block_ids)
    if block_ids != set(range(depth)):
        raise CheckpointError(f"trunk blocks are not numbered 0..{depth - 1}: {sorted(block_ids)}")
    mlp_ratio = state_dict["trunk.blocks.0.mlp.fc1.weight"].shape[0] / hidden
    num_classes = state_dict["twins.K.weight"].shape[0]
    label_rows = state_dict["trunk.y_embedder.embedding_table.weight"].shape[0]

    heads, source = _heads(cfg, hidden, num_heads)
    for key, value in (("dit_hidden", hidden), ("dit_depth", depth), ("patch_size", patch),
                       ("latent_ch", channels), ("num_classes", num_classes)):
        recorded = _cfg_value(cfg, key, int)
        if recorded is not None and recorded != value:
            log.warning("cfg[%r] = %s disagrees with the weights (%s); using the weights",
                        key, recorded, value)
    names = _cfg_class_names(cfg, num_classes)
    mode = cfg.get("mode") or "pixel"
    if mode not in ("pixel", "latent"):
        log.warning("cfg['mode'] = %r is neither 'pixel' nor 'latent'; using 'pixel'", mode)
        mode = "pixel"
    scale = _cfg_value(cfg, "vae_scale", float)
    t_eps = _cfg_value(cfg, "t_eps", float)
    t_eps = 1e-3 if t_eps is None else t_eps
    if not 0.0 <= t_eps < 0.5:
        raise CheckpointError(f"checkpoint cfg['t_eps'] = {t_eps} is outside [0, 0.5)")
    return GAFConfig(
        in_channels=channels, input_size=grid * patch, patch_size=patch, hidden_size=hidden,
        depth=depth, num_heads=heads, mlp_ratio=float(mlp_ratio), num_classes=num_classes,
        label_rows=label_rows, t_eps=t_eps, mode=mode, vae_scale=scale,
        class_names=tuple(names) if names is not None else None, heads_source=source)


def _cfg_value(cfg: Mapping[str, Any], key: str, kind: type) -> Any:
    """``cfg[key]`` as ``kind`` (int or float), None when absent; a malformed value is a
    :class:`CheckpointError` naming the field."""
    value = cfg.get(key)
    if value is None:
        return None
    try:
        if isinstance(value, bool) or (kind is int and float(value) != int(float(value))):
            raise ValueError
        out = kind(float(value)) if kind is int else kind(value)
    except (TypeError, ValueError, OverflowError):
        raise CheckpointError(f"checkpoint cfg[{key!r}] = {value!r} is not a valid "
                              f"{kind.__name__}") from None
    if kind is float and not math.isfinite(out):
        raise CheckpointError(f"checkpoint cfg[{key!r}] = {value!r} is not finite")
    return out


def _cfg_class_names(cfg: Mapping[str, Any], num_classes: int) -> tuple[str, ...] | None:
    names = cfg.get("class_names")
    if names is None:
        return None
    if isinstance(names, (str, bytes)) or not isinstance(names, (list, tuple)):
        raise CheckpointError(f"checkpoint cfg['class_names'] = {names!r} is not a list of names")
    if len(names) != num_classes:
        log.warning("ignoring %d class names for %d classes", len(names), num_classes)
        return None
    return tuple(str(n) for n in names)


def _heads(cfg: Mapping[str, Any], hidden: int, num_heads: int | None) -> tuple[int, str]:
    """Head count and where it came from: the argument, the checkpoint cfg, DiT convention.
    An argument that contradicts the checkpoint's recorded count is refused."""
    recorded = _cfg_value(cfg, "dit_heads", int) or _cfg_value(cfg, "num_heads", int)
    if num_heads is not None:
        if recorded is not None and int(num_heads) != recorded:
            raise CheckpointError(f"the checkpoint records {recorded} attention heads; "
                                  f"--heads {num_heads} contradicts it (drop --heads)")
        heads, source = int(num_heads), "argument"
    elif recorded is not None:
        heads, source = recorded, "checkpoint cfg"
    elif (conv := default_heads(hidden)) is not None:
        heads, source = conv, "DiT convention"
    else:
        raise CheckpointError(
            f"head count unknown: the checkpoint has no cfg['dit_heads'] and hidden size "
            f"{hidden} has no DiT convention (384, 768, 1024, 1152); pass num_heads (--heads)")
    if heads < 1:
        raise CheckpointError(f"the head count must be >= 1, got {heads}")
    return heads, source  # divisibility is checked by GAFConfig ("not divisible")


def check_tensors(model: GAF, state_dict: Mapping[str, Tensor], where: str) -> None:
    """Every tensor has the shape the architecture needs and only finite values; the error
    names the first offending tensor."""
    expected = model.state_dict()
    for key, value in state_dict.items():
        want = expected.get(key)
        if want is not None and tuple(value.shape) != tuple(want.shape):
            raise CheckpointError(f"{where}: tensor {key} has shape {list(value.shape)}, the "
                                  f"architecture needs {list(want.shape)}")
    for key, value in state_dict.items():
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            bad = int((~torch.isfinite(value)).sum())
            raise CheckpointError(f"{where}: tensor {key} has {bad} NaN or infinite value(s) "
                                  f"of {value.numel()}")


def load_model(path: str | os.PathLike[str], *, num_heads: int | None = None,
               use_ema: bool = True, device: str | torch.device = "cpu",
               trust_pickle: bool = False, dtype: torch.dtype = torch.float32) -> GAF:
    """Load a GAF checkpoint (published ``.pt``, bare state dict, safetensors or a bundled
    name such as ``"digits"``) into an eval-mode :class:`GAF`.

    ``ema`` weights are used when present and ``use_ema`` is true, else ``model``.
    """
    ckpt = read_checkpoint(path, use_ema=use_ema, trust_pickle=trust_pickle)
    return model_from_checkpoint(ckpt, num_heads=num_heads, device=device, dtype=dtype)


def model_from_checkpoint(ckpt: LoadedCheckpoint, *, num_heads: int | None = None,
                          device: str | torch.device = "cpu",
                          dtype: torch.dtype = torch.float32) -> GAF:
    """Build the :class:`GAF` of an already read checkpoint (see :func:`read_checkpoint`)."""
    check_gaf_keys(ckpt.state_dict, str(ckpt.path))
    if num_heads is not None and num_heads < 1:
        raise ConfigError(f"num_heads must be >= 1, got {num_heads}")
    try:
        config = infer_config(ckpt.state_dict, ckpt.cfg, num_heads=num_heads)
    except ConfigError as err:
        raise CheckpointError(f"{ckpt.path}: {err}") from None
    log.info("loaded %s weights from %s; heads=%d (%s)", ckpt.source, ckpt.path,
             config.num_heads, config.heads_source)
    model = GAF(config)
    check_tensors(model, ckpt.state_dict, str(ckpt.path))
    result = model.load_state_dict(ckpt.state_dict, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise CheckpointError(
            f"{ckpt.path} does not match the GAF layout: missing "
            f"{result.missing_keys[:5]}, unexpected {result.unexpected_keys[:5]}")
    return model.to(device=device, dtype=dtype).eval()


def save_safetensors(model: GAF, path: str | os.PathLike[str],
                     extra_metadata: Mapping[str, str] | None = None) -> Path:
    """Write gaf-trt's release format: weights as safetensors, config JSON in the metadata."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    meta = {CONFIG_METADATA_KEY: model.config.to_json(), "format": "gaf-trt"}
    meta.update(extra_metadata or {})
    return atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=meta))

