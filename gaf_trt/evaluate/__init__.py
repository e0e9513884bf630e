"""``gaf-trt evaluate``: FID, Inception Score, KID, precision/recall (Inception weights from a
local file) and the digits model's own metric, on generated datasets; engine against engine."""

from gaf_trt.evaluate.run import METRICS, EvaluateConfig, format_report, run_evaluate

__all__ = ["METRICS", "EvaluateConfig", "format_report", "run_evaluate"]
