"""``gaf-trt serve``: a GAF model on Triton Inference Server (through PyTriton)."""

from __future__ import annotations

import dataclasses
import signal
import threading
from typing import Optional

import typer

from gaf_trt.cli import options as mo


def serve(
    ckpt: mo.Artifact = mo.DEFAULT_ARTIFACT,
    backend: mo.BackendOpt = None,
    device: mo.DeviceOpt = "auto",
    precision: mo.PrecisionOpt = None,
    vae: mo.VaeOpt = None,
    heads: mo.HeadsOpt = None,
    no_ema: mo.NoEmaOpt = False,
    trust_pickle: mo.TrustPickleOpt = False,
    threads: mo.ThreadsOpt = 0,
    http_port: int = typer.Option(8000, "--http-port", help="Triton HTTP port."),
    grpc_port: int = typer.Option(8001, "--grpc-port", help="Triton gRPC port."),
    metrics_port: int = typer.Option(8002, "--metrics-port", help="Triton metrics port."),
    gaf_metrics_port: int = typer.Option(8003, "--gaf-metrics-port", help="Port of gaf-trt's "
                                         "own /metrics (the service's gaf_... counters; 0: "
                                         "none)."),
    batching: str = typer.Option("step", "--batching", help="step (requests share every network "
                                 "call) or request (Triton's dynamic batcher groups whole requests)."),
    instances: int = typer.Option(8, "--instances", help="Requests executing at once (step "
                                  "batching; each is a Triton model instance), and streams "
                                  "of gaf_stream at once."),
    max_batch: int = typer.Option(8, "--max-batch", help="Requests per group (request batching)."),
    max_queue: int = typer.Option(64, "--max-queue", help="Requests waiting in Triton's queue; "
                                  "more are refused at once."),
    max_steps: int = typer.Option(1000, "--max-steps", help="Largest step count a request may ask."),
    max_images: int = typer.Option(16, "--max-images", help="Largest batch a request may ask."),
    max_classes: int = typer.Option(8, "--max-classes", help="Most classes a request may "
                                    "compose (the width padded requests pad classes to)."),
    max_rows: int = typer.Option(256, "--max-rows", help="Row budget of one network call."),
    max_mask_pixels: int = typer.Option(4096 * 4096, "--max-mask-pixels", help="Largest mask "
                                        "image (pixels) a request may send."),
    call_rows: Optional[int] = typer.Option(None, "--call-rows", help="Rows a network call "
                                            "aims at (default: --max-rows; 0: measured at start "
                                            "from the network's rows-vs-time curve)."),
    min_rows: int = typer.Option(16, "--min-rows", help="Network calls have at least this many "
                                  "rows, padded (results then do not depend on what else runs)."),
    cache: mo.CacheOpt = "off",
) -> None:
    """Serve a model on Triton: step-level batching of many requests' solver loops (a latent
    model's `images` are its latents decoded by --vae or the engine directory's VAE graph;
    without either it serves latents only)."""
    from gaf_trt.checks import positive_int
    from gaf_trt.console.errors import STOP_SIGNALS
    from gaf_trt.compose.solvers import MAX_STEPS
    from gaf_trt.errors import ConfigError
    from gaf_trt.pipeline.source import load_source
    from gaf_trt.serve import GenerationService, ServeConfig, ServeLimits
    from gaf_trt.serve import triton as tr
    from gaf_trt.serve.host import check_shm
    from gaf_trt.serve.pytriton_patch import pytriton_missing

    model = mo.model_source_from_cli(ckpt, backend, device, precision, vae, heads, no_ema,
                                     trust_pickle, threads=threads)
    if batching not in ("step", "request"):
        raise ConfigError(f"unknown --batching {batching!r}; valid: request, step")
    for name, value, hi in (("--instances", instances, 64), ("--max-batch", max_batch, 1024),
                            ("--max-queue", max_queue, 100_000)):
        positive_int(name, value, hi)
    if call_rows is not None and not 0 <= call_rows <= 1 << 16:
        raise ConfigError(f"--call-rows must be 0 (measured at start) or 1..{1 << 16}, "
                          f"got {call_rows}")
    positive_int("--min-rows", min_rows, 4096)
    check_ports(http_port, grpc_port, metrics_port, gaf_metrics_port)
    check_shm()
    missing = pytriton_missing()
    if missing is not None:
        raise ConfigError(missing)
    limits = ServeLimits(max_steps=positive_int("--max-steps", max_steps, MAX_STEPS),
                         max_batch=positive_int("--max-images", max_images, 4096),
                         max_classes=positive_int("--max-classes", max_classes, 256),
                         max_rows=positive_int("--max-rows", max_rows, 1 << 16),
                         max_mask_pixels=positive_int("--max-mask-pixels", max_mask_pixels,
                                                        1 << 28))
    step = batching == "step"
    server_cfg = tr.ServerConfig(http_port=http_port, grpc_port=grpc_port,
                                 metrics_port=metrics_port, gaf_metrics_port=gaf_metrics_port,
                                 instances=instances if step else tr.REQUEST_INSTANCES,
                                 max_batch=1 if step else max_batch, max_queue=max_queue,
                                 max_streams=instances)
    # room for every executing gaf request and every gaf_stream stream: neither refuses the other
    service_cfg = ServeConfig(max_queue=server_cfg.instances * server_cfg.max_batch
                              + server_cfg.max_streams,
                              min_rows=min_rows, limits=limits, call_rows=call_rows,
                              mode="step" if step else "request", group_size=max_batch,
                              cache=cache)
    service_cfg.validate()  # before the network is loaded
    if threads:  # the scheduler's own torch work too, whatever the backend
        import torch

        torch.set_num_threads(threads)
    loaded = load_source(model, decoder=False)
    typer.echo(f"model {model.artifact}: {mo.backend_note(model.backend, loaded.backend)}, "
               f"{loaded.device}, {loaded.precision.value}")
    decode = serving_decoder(loaded)
    service = GenerationService(loaded.network,
                                dataclasses.replace(service_cfg, decodes=decode is not None))
    stop = threading.Event()
    for sig in STOP_SIGNALS:  # SIGINT, SIGTERM, SIGHUP: stop as Ctrl-C does
        signal.signal(sig, lambda *_: stop.set())
    tr.serve_until_stopped(service, server_cfg, stop, lambda msg: typer.echo(msg), decode)
    typer.echo("stopped")


def check_ports(http: int, grpc: int, metrics: int, gaf_metrics: int) -> None:
    """Each port valid, all different, then each free (``gaf_metrics`` 0: not served): the
    values are judged before the machine is, so a bad value is named whatever runs here."""
    from gaf_trt.errors import ConfigError
    from gaf_trt.serve.host import check_port_free, check_port_number

    ports = {"--http-port": http, "--grpc-port": grpc, "--metrics-port": metrics}
    if gaf_metrics != 0:
        ports["--gaf-metrics-port"] = gaf_metrics
    for what, port in ports.items():
        check_port_number(port, what)
    if len(set(ports.values())) != len(ports):
        raise ConfigError(f"{', '.join(ports)} must differ, got "
                          f"{', '.join(str(p) for p in ports.values())}")
    for what, port in ports.items():
        check_port_free(port, what)


def serving_decoder(loaded):
    """A latent model's decoder for the ``images`` output (``--vae``, else the engine
    directory's VAE graph), or None: a pixel model, or a latent model served as latents."""
    from gaf_trt.errors import ConfigError
    from gaf_trt.pipeline.source import load_decoder

    if loaded.config.mode != "latent":
        return None
    try:
        loaded.decoder = load_decoder(loaded.source, loaded.config, loaded.device)
    except ConfigError:
        if loaded.source.vae is not None:
            raise
        typer.echo("latent model without a decoder: serving latents only (the images output "
                   "is empty); give --vae DIR to serve decoded images")
        return None
    return loaded.decode
