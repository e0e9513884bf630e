"""The model options every command that takes a model shares: the same names, defaults and
help text in ``sample``, ``transport``, ``translate``, ``generate``, ``serve`` (and, where
they apply, ``bench``, ``export`` and ``evaluate``).

Use them as annotations with the default in the signature::

    def cmd(ckpt: Artifact = DEFAULT_ARTIFACT, backend: BackendOpt = None, ...): ...

and turn them into a :class:`~gaf_trt.pipeline.source.ModelSource` with
:func:`model_source_from_cli` (resolved: backend and precision chosen, as every record
stores them).
"""

from __future__ import annotations

from typing import Annotated, Any, Optional

import typer

from gaf_trt.compose.cache import cache_forms
from gaf_trt.engine.base import BACKENDS
from gaf_trt.precision import Precision

DEFAULT_ARTIFACT = "digits"

Artifact = Annotated[str, typer.Option(
    "--ckpt", "--engine", metavar="ARTIFACT",
    help="Checkpoint (.pt / .safetensors), bundled model name (digits), or an engine directory "
         "from `gaf-trt export` (--engine is the same option).")]
BackendOpt = Annotated[Optional[str], typer.Option(
    "--backend", help=f"One of: {', '.join(BACKENDS.names())} (default: auto for an engine "
                      "directory, which names its choice; torch for a checkpoint).")]
DeviceOpt = Annotated[str, typer.Option("--device", help="cpu, cuda, cuda:N or auto.")]
PrecisionOpt = Annotated[Optional[Precision], typer.Option(
    "--precision", case_sensitive=False,
    help="Network precision (default: an engine directory's own, else fp32); the solver "
         "state stays fp32.")]
VaeOpt = Annotated[Optional[str], typer.Option(
    "--vae", help="diffusers AutoencoderKL directory, for latent models (default: the engine "
                  "directory's VAE decoder graph when it has one).")]
HeadsOpt = Annotated[Optional[int], typer.Option(
    "--heads", help="Attention heads, when the checkpoint does not say.")]
NoEmaOpt = Annotated[bool, typer.Option(
    "--no-ema", help="Use the raw model weights, not the EMA.")]
CacheOpt = Annotated[str, typer.Option(
    "--cache", metavar="POLICY",
    help=f"Reuse the trunk's features across solver evaluations: {', '.join(cache_forms())} "
         "(static:N runs the trunk every N-th evaluation; taylor:N on that schedule, "
         "extrapolating the features in between; adaptive:δ when its input changed by more "
         "than δ, relative L1). Needs a torch model or an engine's split graphs.")]
ThreadsOpt = Annotated[int, typer.Option(
    "--threads", metavar="N",
    help="Threads of the network's runtime: ONNX Runtime's intra-op threads (ort), OpenVINO's "
         "INFERENCE_NUM_THREADS (openvino), torch.set_num_threads (torch); 0: the runtime's "
         "default. Recorded in the run's record (options.threads).")]
TrustPickleOpt = Annotated[bool, typer.Option(
    "--trust-pickle", help="Allow arbitrary unpickling (only for checkpoints you trust).")]


def model_source_from_cli(ckpt: str = DEFAULT_ARTIFACT, backend: Optional[str] = None,
                          device: str = "auto", precision: Optional[Precision] = None,
                          vae: Optional[str] = None, heads: Optional[int] = None,
                          no_ema: bool = False, trust_pickle: bool = False,
                          options: Optional[dict[str, Any]] = None, *,
                          threads: int = 0) -> Any:
    """The :class:`~gaf_trt.pipeline.source.ModelSource` of the shared options, checked and
    resolved (an engine directory without ``--backend`` runs ``auto``; ``--precision``
    defaults to its own; ``--threads`` other than 0 goes to the backend options)."""
    from gaf_trt.pipeline.source import ModelSource

    options = dict(options or {})
    if threads != 0:
        options["threads"] = threads
    src = ModelSource(artifact=ckpt, backend=backend, device=device, precision=precision,
                      vae=vae, num_heads=heads, use_ema=not no_ema, trust_pickle=trust_pickle,
                      options=options)
    src.check()
    return src.resolved()


def backend_note(asked: str, ran: str) -> str:
    """``backend ort (chosen by auto)`` when auto picked, else ``backend torch``."""
    return f"backend {ran} (chosen by auto)" if asked == "auto" else f"backend {ran}"
