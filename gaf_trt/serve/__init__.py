"""Serving GAF models: step-level batching of many requests' solver loops on one network.

- :mod:`gaf_trt.serve.scheduler`: :class:`StepScheduler` packs the rows of every waiting
  network evaluation into one call (row budget, a minimum call size for bit-identity);
- :mod:`gaf_trt.serve.requests`: a request's arguments, validation and run through the
  ``gaf-trt sample`` pipeline;
- :mod:`gaf_trt.serve.service`: :class:`GenerationService` (bounded admission, worker per
  request, cancellation);
- :mod:`gaf_trt.serve.triton`: ``gaf-trt serve`` on Triton through PyTriton, with
  :mod:`~gaf_trt.serve.wire` (tensors, request decoding), :mod:`~gaf_trt.serve.host`
  (ports, shared memory, processes) and :mod:`~gaf_trt.serve.pytriton_patch` (the stub
  patch, inserting :mod:`~gaf_trt.serve.pb_tensors` and :mod:`~gaf_trt.serve.stub_serving`)
  and :mod:`~gaf_trt.serve.metrics` (the ``gaf_...`` Prometheus metrics and their endpoint);
- :mod:`gaf_trt.serve.repository` / :mod:`gaf_trt.serve.bls`: a Triton model repository from
  an engine directory (``gaf-trt triton-repo``; config text :mod:`~gaf_trt.serve.pbtxt`,
  network models :mod:`~gaf_trt.serve.network_models`) and its Python-backend models.
"""

from gaf_trt.serve.repository import RepoOptions, build_repository
from gaf_trt.serve.requests import ServeLimits, ServeRequest, plan_request, run_request, to_images
from gaf_trt.serve.scheduler import Cancelled, MinRowsNetwork, StepScheduler
from gaf_trt.serve.service import GenerationService, Job, Overloaded, ServeConfig

__all__ = ["Cancelled", "GenerationService", "Job", "MinRowsNetwork", "Overloaded",
           "RepoOptions", "ServeConfig", "ServeLimits", "ServeRequest", "StepScheduler",
           "build_repository", "plan_request", "run_request", "to_images"]
