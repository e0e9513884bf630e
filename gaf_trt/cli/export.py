"""``gaf-trt export``: a checkpoint -> an engine directory (ONNX graphs, parity check,
TensorRT plans where TensorRT and a GPU exist, ``manifest.json``); ``--from-onnx DIR`` builds
the plans of an existing directory later, on a GPU machine."""

from __future__ import annotations

from typing import Optional

import typer

from gaf_trt.cli.options import HeadsOpt, NoEmaOpt, TrustPickleOpt
from gaf_trt.precision import Precision


def export(
    ckpt: Optional[str] = typer.Option(None, "--ckpt", help="Checkpoint file or bundled name."),
    out: Optional[str] = typer.Option(None, "--out", help="Engine directory to write."),
    vae: Optional[str] = typer.Option(None, "--vae", help="diffusers AutoencoderKL folder "
                                      "(latent models): exports its decoder with --graphs vae."),
    precision: Precision = typer.Option(Precision.FP32, "--precision", case_sensitive=False,
                                        help="fp32, fp16, bf16; int8 / fp8: quantised Q/DQ "
                                        "graphs calibrated on solver trajectories."),
    calib_samples: int = typer.Option(32, "--calib-samples", help="int8/fp8: calibration "
                                      "trajectories (4-4096)."),
    calib_steps: int = typer.Option(10, "--calib-steps", help="int8/fp8: solver steps per "
                                    "calibration trajectory (2-200)."),
    calib_seed: int = typer.Option(0, "--calib-seed", help="int8/fp8: seed of the calibration "
                                   "noise and classes."),
    calib_method: str = typer.Option("minmax", "--calib-method", help="int8: minmax, "
                                     "percentile or entropy (fp8: always distribution)."),
    accept_error: bool = typer.Option(False, "--accept-error", help="int8/fp8: write the "
                                      "engine even when its error vs fp32 exceeds the bound."),
    smoothquant: Optional[float] = typer.Option(None, "--smoothquant", help="int8/fp8: "
                                                "SmoothQuant with this alpha in (0, 1]."),
    int8_scheme: str = typer.Option("auto", "--int8-scheme", help="int8: activation/weight "
                                    "types: auto (u8s8 on x86 with VNNI/AMX, s8s8 elsewhere "
                                    "and for TensorRT plans), u8s8 or s8s8."),
    quant: str = typer.Option("static", "--quant", help="int8: static (Q/DQ calibrated on "
                              "solver trajectories) or dynamic (ONNX Runtime's dynamic "
                              "quantisation, no calibration; not for TensorRT)."),
    graphs: str = typer.Option("split,fused", "--graphs",
                               help="Comma-separated: split, fused, vae."),
    opset: int = typer.Option(18, "--opset", help="18, or 23 (one Attention node per block; "
                              "TensorRT >= 10.14)."),
    min_batch: int = typer.Option(1, "--min-batch", help="Smallest batch of the profiles."),
    opt_batch: int = typer.Option(4, "--opt-batch", help="Batch the TensorRT plans are tuned "
                                  "for (between --min-batch and --max-batch)."),
    max_batch: int = typer.Option(16, "--max-batch", help="Largest batch of the profiles "
                                  "(at most 4096)."),
    max_classes: int = typer.Option(4, "--max-classes", help="Most classes composed at once "
                                    "(at most 256)."),
    static_batch: Optional[int] = typer.Option(None, "--static-batch", help="Also build "
                                               "fixed-shape plans for this batch (CUDA graphs)."),
    onnx_only: bool = typer.Option(False, "--onnx-only", help="Write ONNX + manifest only."),
    from_onnx: Optional[str] = typer.Option(None, "--from-onnx", help="Build the TensorRT "
                                            "plans of this engine directory here."),
    heads: HeadsOpt = None,
    no_ema: NoEmaOpt = False,
    trust_pickle: TrustPickleOpt = False,
    no_parity: bool = typer.Option(False, "--no-parity", help="Skip the ONNX Runtime check."),
    workspace_gb: Optional[float] = typer.Option(None, "--workspace-gb", help="TensorRT "
                                                 "builder workspace limit in GiB (default: "
                                                 "TensorRT's)."),
    hardware_compat: str = typer.Option("none", "--hardware-compat",
                                        help="none, ampere_plus or same_compute_capability."),
    version_compatible: bool = typer.Option(False, "--version-compatible", help="Plans that "
                                            "later TensorRT versions can run (lean runtime)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress on stderr."),
    strip_plan: bool = typer.Option(False, "--strip-plan", help="Weight-stripped plans, "
                                    "refitted from the ONNX weights at load."),
) -> None:
    """Export a checkpoint to an engine directory (or build its plans with --from-onnx)."""
    from gaf_trt.errors import ConfigError
    from gaf_trt.export.build import (
        ExportConfig,
        ProfileSpec,
        build_from_onnx,
        export_engine,
    )
    from gaf_trt.export.graphs import parse_groups

    profile = ProfileSpec(min_batch, opt_batch, max_batch, max_classes,
                          static_batch=static_batch)
    profile.validate()
    trt_options = {"workspace_gb": workspace_gb, "hardware_compatibility": hardware_compat,
                   "version_compatible": version_compatible, "strip_plan": strip_plan}
    if from_onnx is not None:
        if ckpt is not None or out is not None:
            raise ConfigError("--from-onnx DIR rebuilds plans in DIR; do not give --ckpt / --out")
        res = _with_progress(quiet, None, lambda say: build_from_onnx(
            from_onnx, profile if _profile_given(min_batch, opt_batch, max_batch, max_classes,
                                                 static_batch) else None, trt_options, say))
        typer.echo(f"{res.out}: {res.note} ({', '.join(res.plans_built)})")
        return
    if ckpt is None or out is None:
        raise ConfigError("give --ckpt CKPT and --out DIR (or --from-onnx DIR)")
    cfg = ExportConfig(ckpt=ckpt, out=out, precision=precision, graphs=parse_groups(graphs),
                       opset=opset, profile=profile, vae=vae, onnx_only=onnx_only,
                       num_heads=heads, use_ema=not no_ema, trust_pickle=trust_pickle,
                       parity=not no_parity,
                       trt_options=trt_options,
                       quant=_quant_config(precision, calib_samples, calib_steps, calib_seed,
                                           calib_method, accept_error, smoothquant,
                                           int8_scheme, quant))
    res = _with_progress(quiet, None, lambda say: export_engine(cfg, progress=say))
    worst = max((r.worst_rel for r in res.parity if r.ran), default=None)
    parity = f", parity rel <= {worst:.2g}" if worst is not None else ""
    typer.echo(f"{res.out}: {len(res.manifest['graphs'])} graph(s) "
               f"({', '.join(res.manifest['graphs'])}), {precision.value}{parity}")
    if "quantization" in res.manifest:
        from gaf_trt.export.quantize import describe_quality

        typer.echo(describe_quality(res.manifest["quantization"]))
    typer.echo(res.note)


def _with_progress(quiet: bool, total: int | None, job):
    """``job(say)`` with a one-line progress on stderr naming each step (export, parity
    check per graph; plan builds), cleared if the job fails; ``--quiet``: none."""
    from gaf_trt.console.progress import shown, step_progress

    if quiet:
        return job(None)
    progress, say = step_progress(total)
    with shown(progress):
        return job(say)


def _quant_config(precision: Precision, *args: object):
    """The calibration options of a quantised export (None for fp32 / fp16 / bf16)."""
    from gaf_trt.errors import ConfigError

    if not precision.quantized:
        if tuple(args[-2:]) != ("auto", "static"):
            raise ConfigError(f"--int8-scheme and --quant apply to --precision int8, not "
                              f"{precision.value}")
        return None
    from gaf_trt.export.quantize import QuantConfig

    samples, steps, seed, method, accept, alpha, scheme, mode = args
    return QuantConfig(samples=samples, steps=steps, seed=seed, method=method,
                       accept_error=accept, smoothquant=alpha, scheme=scheme, mode=mode)


def _profile_given(*values: object) -> bool:
    """True when any profile option differs from its default (then it overrides the
    manifest's profile in --from-onnx)."""
    return tuple(values) != (1, 4, 16, 4, None)
