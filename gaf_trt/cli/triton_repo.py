"""``gaf-trt triton-repo``: a Triton model repository from an engine directory (network
models per graph, the ``gaf_anchors`` ensemble and the ``gaf`` solver model)."""

from __future__ import annotations

import typer


def triton_repo(
    engine_dir: str = typer.Argument(..., help="Engine directory from `gaf-trt export`."),
    repo: str = typer.Argument(..., help="Model repository folder to write (new, empty, or a "
                               "previous triton-repo output, which is replaced)."),
    network_backend: str = typer.Option("auto", "--network-backend", help="auto (tensorrt "
                                        "with plans, else onnxruntime), onnxruntime, tensorrt, "
                                        "or python (ONNX Runtime in Python-backend models)."),
    device: str = typer.Option("auto", "--device", help="Where the network models run: auto "
                               "(cuda with TensorRT plans, else cpu), cpu or cuda."),
    instances: int = typer.Option(1, "--instances", help="Instances of the solver model "
                                  "(one Python process each)."),
    network_instances: int = typer.Option(1, "--network-instances",
                                          help="Instances of each network model."),
    max_batch: int = typer.Option(8, "--max-batch", help="Requests one solver execute takes "
                                  "(they share every network call)."),
    max_queue: int = typer.Option(64, "--max-queue", help="Requests in flight (and waiting in "
                                  "the solver model's queue); more are refused at once."),
    queue_delay_us: int = typer.Option(0, "--queue-delay-us", help="Network models' dynamic "
                                       "batcher: microseconds to wait for more calls."),
    max_steps: int = typer.Option(1000, "--max-steps", help="Largest step count a request may ask."),
    max_images: int = typer.Option(16, "--max-images", help="Largest batch a request may ask."),
    max_classes: int = typer.Option(8, "--max-classes", help="Most classes a request may compose."),
    max_rows: int | None = typer.Option(None, "--max-rows", help="Row budget of one network "
                                           "call (default: the engine profile's largest)."),
    min_rows: int = typer.Option(16, "--min-rows", help="Network calls have at least this many "
                                 "rows, padded (results then do not depend on what else runs)."),
    blocking_execute: bool = typer.Option(False, "--blocking-execute", help="Answer requests "
                                          "before execute returns (Triton before 24.06); new "
                                          "requests then wait for the running ones."),
) -> None:
    """Write a Triton model repository for an engine directory."""
    from gaf_trt.serve.repository import RepoOptions, build_repository

    opts = RepoOptions(network_backend=network_backend, device=device, instances=instances,
                       network_instances=network_instances, max_batch=max_batch,
                       max_queue=max_queue, queue_delay_us=queue_delay_us, max_steps=max_steps,
                       max_images=max_images, max_classes=max_classes, max_rows=max_rows,
                       min_rows=min_rows, respond_later=not blocking_execute)
    plan = build_repository(engine_dir, repo, opts)
    typer.echo(f"{repo}: models {', '.join(plan.model_names)} ({plan.backend} network on "
               f"{plan.kind}); serve it with `tritonserver --model-repository {repo}`")
