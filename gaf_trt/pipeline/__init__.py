"""End-to-end jobs built from the library pieces (what the CLI commands call)."""

from gaf_trt.pipeline.generation import SamplePlan
from gaf_trt.pipeline.sample import (
    SampleConfig,
    SampleResult,
    prepare_sample,
    run_sample,
)
from gaf_trt.pipeline.source import Loaded, ModelSource, load_source, source_record
from gaf_trt.pipeline.translate import TranslateConfig, prepare_translate, run_translate
from gaf_trt.pipeline.transport import (
    TRANSPORT_MODES,
    TransportConfig,
    TransportResult,
    prepare_transport,
    run_transport,
)

__all__ = ["SampleConfig", "SamplePlan", "SampleResult", "prepare_sample",
           "run_sample", "TRANSPORT_MODES", "ModelSource", "Loaded", "load_source",
           "source_record", "TranslateConfig", "TransportConfig",
           "TransportResult", "prepare_translate", "prepare_transport", "run_translate",
           "run_transport"]
