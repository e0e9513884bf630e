"""``gaf-trt info``: describe a checkpoint or an engine directory."""

from __future__ import annotations

import json
from typing import Optional

import typer


def info(
    path: str = typer.Argument("digits", help="Checkpoint file, bundled model name, or engine "
                               "directory written by `gaf-trt export`."),
    heads: Optional[int] = typer.Option(None, "--heads", help="Attention heads, when the "
                                        "checkpoint does not say."),
    trust_pickle: bool = typer.Option(False, "--trust-pickle", help="Allow arbitrary unpickling "
                                      "(only for checkpoints you trust)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    compare: bool = typer.Option(False, "--compare", help="Engine directory: run every runtime "
                                 "on the same seeded inputs and compare each with PyTorch "
                                 "(Polygraphy's comparator; needs the [compare] extra): per "
                                 "graph and runtime the max abs / relative error and pass or "
                                 "fail; exit code 1 when one misses the bound."),
    backends: Optional[str] = typer.Option(None, "--backends", metavar="LIST",
                                           help="With --compare: the runtimes, comma-separated "
                                           "(default: torch,ort,openvino,trt)."),
    seed: int = typer.Option(0, "--seed", help="With --compare: the inputs' seed."),
    ckpt: Optional[str] = typer.Option(None, "--ckpt", help="With --compare: the directory's "
                                       "source checkpoint, the torch reference of an int8 / "
                                       "fp8 directory (which holds no PyTorch weights)."),
) -> None:
    """Describe a checkpoint (architecture, classes, parameters, hash) or an engine directory;
    --compare checks every runtime on an engine directory against PyTorch."""
    from gaf_trt.pipeline.info import describe_checkpoint, is_engine_dir

    if compare or backends is not None or ckpt is not None:
        compare_runtimes(path, compare, backends, seed, as_json, ckpt)
        return
    if is_engine_dir(path):
        from gaf_trt.pipeline.info import describe_engine

        record = describe_engine(path)
        if as_json:
            typer.echo(json.dumps(record, indent=2))
        else:
            from gaf_trt.enginedir import describe_lines

            typer.echo("\n".join(with_profiles(describe_lines(record), record)))
        return
    result = describe_checkpoint(path, num_heads=heads, trust_pickle=trust_pickle)
    typer.echo(json.dumps(result.to_dict(), indent=2) if as_json else "\n".join(result.lines()))


def compare_runtimes(path: str, compare: bool, backends: Optional[str], seed: int,
                     as_json: bool, ckpt: Optional[str] = None) -> None:
    """``info DIR --compare``: the comparison table (or JSON); exit code 1 on a fail."""
    from gaf_trt.console.errors import fail
    from gaf_trt.errors import ConfigError
    from gaf_trt.pipeline.compare_runtimes import compare_engine, parse_runtimes
    from gaf_trt.pipeline.info import is_engine_dir

    if not compare:
        raise ConfigError("--backends and --ckpt go with --compare")
    runtimes = parse_runtimes(backends)
    if not is_engine_dir(path):
        raise ConfigError(f"--compare needs an engine directory (from gaf-trt export), got "
                          f"{path!r}")
    result = compare_engine(path, runtimes, seed=seed, ckpt=ckpt)
    typer.echo(json.dumps(result.to_dict(), indent=2) if as_json else "\n".join(result.lines()))
    if not result.ok:
        bad = [f"{p.graph} on {p.runtime}" for p in result.pairs if not p.passed]
        raise fail(("runtimes differ beyond the bound: " + ", ".join(bad)) if bad
                   else "nothing compared: fewer than two runtimes ran", code=1)


def profile_lines(profiles: object) -> list[str]:
    """``profiles  B 1..16 (opt 4)  N 1..4 (opt 2)  M 1..64 (opt 8)`` (+ the static shapes):
    the batch (B), class-count (N) and network-batch (M = N*B) ranges the graphs' TensorRT
    profiles cover."""
    if not isinstance(profiles, dict):
        return []

    def span(key: str) -> str | None:
        v = profiles.get(key)
        if isinstance(v, (list, tuple)) and len(v) == 3:
            return f"{key} {v[0]}..{v[2]} (opt {v[1]})"
        return None

    parts = [p for p in (span("B"), span("N"), span("M")) if p]
    lines = [f"profiles    {'  '.join(parts)}"] if parts else []
    static = profiles.get("static")
    if isinstance(static, dict):
        fixed = [f"{k}={v[0]}" for k, v in static.items() if isinstance(v, (list, tuple)) and v]
        lines.append(f"static      {' '.join(fixed)} (fixed-shape plans, CUDA graphs)")
    return lines


def with_profiles(lines: list[str], record: dict) -> list[str]:
    """The engine description with its profile lines after the graphs (before the plans)."""
    extra = profile_lines(record.get("profiles"))
    at = next((i for i, ln in enumerate(lines) if ln.startswith(("plans", "plan "))), len(lines))
    return lines[:at] + extra + lines[at:]
