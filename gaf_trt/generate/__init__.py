"""``gaf-trt generate``: class-conditional datasets in deterministic, resumable shards, run
in-process, under torchrun or on Ray, byte-identical whichever runs them."""

from gaf_trt.generate.job import GenerateConfig
from gaf_trt.generate.run import RUNNERS, GenerateResult, Hooks, RunOptions, run_generate
from gaf_trt.generate import ray_runner  # noqa: E402,F401 - registers the "ray" runner

__all__ = ["GenerateConfig", "GenerateResult", "Hooks", "RunOptions", "RUNNERS", "run_generate"]
