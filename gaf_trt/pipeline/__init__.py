"""End-to-end jobs built from the library pieces (what the CLI commands call)."""

from gaf_trt.pipeline.sample import (
    SampleConfig,
    SamplePlan,
    SampleResult,
    prepare_sample,
    resolve_classes,
    run_sample,
)

__all__ = ["SampleConfig", "SamplePlan", "SampleResult", "prepare_sample", "resolve_classes",
           "run_sample"]
