"""``load_engine``: open an engine directory written by ``gaf-trt export`` with a backend;
``load_auto``, the loader of the ``auto`` backend (registered here, after torch, ort and trt).

``backend="auto"`` follows :func:`gaf_trt.engine.auto.resolve_auto` (TensorRT when the
directory has plans and TensorRT and a GPU are here; on the CPU the runtime measured fastest,
else ONNX Runtime, else the PyTorch weights stored in the directory). The result is an
:class:`~gaf_trt.engine.base.AnchorNetwork` that ``gaf_trt.sample`` accepts in place of a
model (with the fused graphs also a :class:`~gaf_trt.engine.base.FusedComposedStep`).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from gaf_trt.engine.auto import resolve_auto
from gaf_trt.engine.base import (
    BACKENDS,
    AnchorNetwork,
    Backend,
    LoadRequest,
    load_backend,
)
from gaf_trt.errors import ConfigError
from gaf_trt.precision import Precision

log = logging.getLogger(__name__)

ENGINE_BACKENDS = ("auto", "trt", "ort", "openvino", "torch")


def load_engine(folder: str | os.PathLike[str], backend: str = "auto", device: str = "auto",
                precision: Precision | str | None = None, **options: Any) -> AnchorNetwork:
    """Open ``folder`` (an engine directory) with ``backend`` on ``device``.

    Every command opens engine directories through here or the backends' loaders, which
    share one path: :func:`~gaf_trt.enginedir.read_manifest` (size cap, typed schema,
    every named path inside the directory), the precision check, and
    :func:`~gaf_trt.enginedir.verify_files` (sha256 of every file used, external data
    included) before anything is loaded. ``precision`` defaults to the engine's own; another
    one is refused (except bf16 on an fp32 directory with ``openvino``: its bf16 hint).
    ``options`` go to the backend: ``graphs`` (auto|split|fused), ``static`` (trt),
    ``ort_provider`` (cuda|tensorrt), ``ov_precision`` (fp32|bf16: openvino), ``threads``,
    ``verify`` (sha256 of the files used).
    """
    from gaf_trt.device import resolve_device
    from gaf_trt.enginedir import check_precision, read_manifest

    if backend not in ENGINE_BACKENDS:
        raise ConfigError(f"unknown engine backend {backend!r}; valid: "
                          f"{', '.join(ENGINE_BACKENDS)}")
    folder = Path(folder)
    man = read_manifest(folder)
    if backend == "openvino":  # checks precision itself (bf16 on fp32: the bf16 hint)
        want = Precision(precision or man["precision"])
        return load_backend(backend, LoadRequest(str(folder), device=resolve_device(device),
                                                 precision=want, options=dict(options)))
    check_precision(man, precision, folder)
    built = Precision(man["precision"])
    dev = resolve_device(device)
    if backend == "auto":  # the one auto rule (measured on this CPU where bench recorded it)
        choice = resolve_auto(LoadRequest(str(folder), device=dev, precision=built,
                                          options=dict(options)))
        log.info("engine %s: backend auto -> %s on %s (%s)", folder, choice.label, dev,
                 choice.reason)
        backend, options = choice.backend, dict(choice.options)
    if backend == "torch":
        from gaf_trt.engine.torch_backend import OPTION_KEYS

        if built.quantized:  # before the weights: a quantised directory has no torch copy
            src = (man.get("source") or {}).get("path") or "the checkpoint it was exported from"
            raise ConfigError(f"the torch backend does not run {built.value} engine "
                              f"directories ({folder}): use backend ort or openvino on it, "
                              f"or backend torch on the checkpoint ({src})")

        weights = engine_weights(folder, verify=bool(options.get("verify", True)), man=man)
        torch_options = {k: v for k, v in options.items() if k in OPTION_KEYS}
        return load_backend("torch", LoadRequest(str(weights), device=dev, precision=built,
                                                 options=torch_options))
    return load_backend(backend, LoadRequest(str(folder), device=dev, precision=built,
                                             options=dict(options)))


def default_precision(artifact: str | os.PathLike[str], requested: Precision | None
                      ) -> Precision:
    """The precision a command runs at when ``--precision`` is not given: an engine
    directory's own (it runs only at the precision it was exported at), else fp32."""
    if requested is not None:
        return Precision(requested)
    if Path(artifact).is_dir():
        from gaf_trt.enginedir import read_manifest

        return Precision(read_manifest(artifact)["precision"])
    return Precision.FP32


def engine_weights(folder: str | os.PathLike[str], *, verify: bool = True,
                   man: dict[str, Any] | None = None) -> Path:
    """The PyTorch weights an engine directory stores (``model.safetensors``), checked
    against the manifest's sha256 before anyone loads them; an
    :class:`~gaf_trt.enginedir.EngineDirError` when there are none."""
    from gaf_trt.enginedir import EngineDirError, read_manifest, verify_files

    folder = Path(folder)
    man = man if man is not None else read_manifest(folder)
    weights = man.get("weights")
    if not weights:
        src = (man.get("source") or {}).get("path")
        why = ("an int8 / fp8 directory stores only its quantised weights"
               if man.get("precision") in ("int8", "fp8") else "exported without them")
        raise EngineDirError(f"{folder} holds no PyTorch weights ({why}); use backend ort, "
                             "openvino or trt, or give --ckpt with the checkpoint it was "
                             f"exported from{f' ({src})' if src else ''}")
    if verify:
        verify_files(folder, man, [weights])
    return folder / weights


class EngineVAEDecoder:
    """``decode(z [B, C, h, w] scaled latents) -> images [B, 3, 8h, 8w]`` in ``[-1, 1]``
    through an engine directory's ``vae_decoder`` graph (the interface of
    :class:`gaf_trt.model.vae.LatentDecoder`)."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.backend = engine.name

    def decode(self, z):
        import torch

        z = z.to(device=self.engine.device, dtype=torch.float32).contiguous()
        return self.engine._run("vae_decoder", {"latent": z})[0]


def load_vae_decoder(folder: str | os.PathLike[str], backend: str = "auto",
                     device: str = "auto", **options: Any) -> EngineVAEDecoder:
    """Open the ``vae_decoder`` graph (``--graphs vae``) of an engine directory with ``ort``
    or ``trt`` (``auto``: TensorRT when its plan and TensorRT are here on CUDA)."""
    from gaf_trt.device import resolve_device
    from gaf_trt.enginedir import (
        EngineDirError,
        files_of,
        read_manifest,
        verify_files,
    )

    folder = Path(folder)
    man = read_manifest(folder)
    if "vae_decoder" not in man["graphs"]:
        raise EngineDirError(f"{folder} has no VAE decoder graph; export with --graphs vae "
                             "--vae DIR")
    dev = resolve_device(device)
    has_plan = any(p.get("graph") == "vae_decoder" for p in (man.get("plans") or {}).values())
    if backend == "auto":
        trt_ok = "trt" in BACKENDS and BACKENDS.get("trt").available() is None
        backend = "trt" if has_plan and dev != "cpu" and trt_ok else "ort"
    if backend not in ("ort", "trt"):
        raise ConfigError(f"unknown VAE decoder backend {backend!r}; valid: auto, ort, trt")
    why = BACKENDS.get(backend).available()
    if why is not None:
        raise ConfigError(f"backend {backend!r} is not available here: {why}")
    if options.get("verify", True):
        verify_files(folder, man, files_of(man, graphs=["vae_decoder"]))
    if backend == "ort":
        from gaf_trt.engine.ort_backend import OrtSplitEngine

        eng = OrtSplitEngine(folder, man, ["vae_decoder"], dev)
        eng._open_sessions(dict(options))
    else:
        from gaf_trt.engine.trt_backend import TrtSplitEngine

        if not dev.startswith("cuda"):
            raise ConfigError("the trt backend needs a CUDA device")
        eng = TrtSplitEngine(folder, man, ["vae_decoder"], dev)
        eng._load_plans(bool(options.get("static", False)))
    return EngineVAEDecoder(eng)


def load_auto(req: LoadRequest) -> AnchorNetwork:
    """Load with the backend :func:`~gaf_trt.engine.auto.resolve_auto` picks (logged at
    INFO); an engine directory goes through :func:`load_engine`, which verifies it."""
    if os.path.isdir(req.artifact):
        return load_engine(req.artifact, backend="auto", device=req.device,
                           precision=req.precision, **req.options)
    choice = resolve_auto(req)
    log.info("backend auto -> %s (%s)", choice.label, choice.reason)
    return load_backend(choice.backend, LoadRequest(
        req.artifact, device=req.device, precision=req.precision, num_heads=req.num_heads,
        use_ema=req.use_ema, trust_pickle=req.trust_pickle, options=choice.options))


if "auto" not in BACKENDS.names():
    BACKENDS.add("auto", Backend("auto", "the fastest available backend for the device",
                                 load_auto))
