"""Quality metrics on feature rows, below every command that reports them: the Fréchet
distance, IS, KID and precision/recall (:mod:`gaf_trt.metrics.features`, ``gaf-trt
evaluate``) and the digits model's classifier metric (:mod:`gaf_trt.metrics.digits`, used by
``gaf-trt evaluate`` and the training quality gate). Imports only :mod:`gaf_trt.errors` and
:mod:`gaf_trt.io`."""
