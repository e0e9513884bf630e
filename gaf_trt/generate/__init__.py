"""``gaf-trt generate``: class-conditional datasets in deterministic, resumable shards, run
in-process, under torchrun or on Ray, byte-identical whichever runs them."""

from gaf_trt.generate import ray_runner  # noqa: F401 - registers the "ray" runner
from gaf_trt.generate.job import GenerateConfig
from gaf_trt.generate.run import (
    RUNNERS,
    GenerateResult,
    Hooks,
    RunOptions,
    run_generate,
)

__all__ = ["RUNNERS", "GenerateConfig", "GenerateResult", "Hooks", "RunOptions", "run_generate"]
