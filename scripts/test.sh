#!/usr/bin/env bash
# Set up and run the test suite on a fresh machine (the README's test command; .ci/run calls it).
# torch is pinned to 2.13.0 first: on these machines that is the CPU wheel on disk, and a bare
# `torch` requirement would pull a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q --disable-pip-version-check torch==2.13.0
python3 -m pip install -q --disable-pip-version-check -e '.[test,serve,docs,openvino]'
# Triton serving tests: nvidia-pytriton pins numpy<2, so it goes in without its dependencies
# (the [serve] extra holds them); numpy stays 2.x for everything else.
python3 -m pip install -q --disable-pip-version-check --no-deps nvidia-pytriton==0.7.0
# Locust for the locustfile's test (tests/serve/test_server_request_batching.py; skipped without
# it): a few seconds here, its gevent / geventhttpclient are already in for tritonclient.
python3 -m pip install -q --disable-pip-version-check locust==2.47.0
# torch-fidelity (gaf-trt evaluate) without its torchvision: PyPI's torchvision is linked against
# CUDA torch, fails to import beside the CPU wheel and then breaks diffusers' imports too.
python3 -m pip install -q --disable-pip-version-check --no-deps 'torch-fidelity>=0.4'
# Two workers (pytest-xdist; the machines have 2 cores): whole files per worker, the server and
# cluster tests on one of them in turn (tests/conftest.py).
python3 -m pytest -q -n 2 --durations=25 "$@"
