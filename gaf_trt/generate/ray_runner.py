"""The Ray runner (``--ray auto|ADDRESS``, extra ``[scale]``): one actor per GPU (or per CPU
fraction) holding one loaded network, shard tasks dispatched by the driver, retried on a
restarted actor when a worker dies; the actors write shards to the shared dataset folder and
the driver records them (``dataset.json``) and reports progress.
"""

from __future__ import annotations

import logging
import os
import socket
from typing import Any

from gaf_trt.errors import ConfigError, GAFError
from gaf_trt.generate.job import GenerateConfig
from gaf_trt.generate.run import (
    RUNNERS,
    Driver,
    GenerateResult,
    Hooks,
    RunOptions,
    render_shard,
)

log = logging.getLogger(__name__)

#: CPU share of one CPU actor (Ray actor pools stall on small machines at 1 CPU each).
CPU_ACTOR_SHARE = 0.5
#: A worker that dies is restarted (and its shard retried) this many times.
MAX_RETRIES = 3
CONNECT_TIMEOUT_S = 3.0
MAX_WORKERS = 1024


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ConfigError("the Ray runner needs Ray: pip install 'gaf-trt[scale]'") from None
    return ray


def check_address(address: str) -> None:
    """A cluster address must answer within seconds (never a hang on a dead address)."""
    target = address.split("://", 1)[-1]
    host, sep, port = target.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"--ray {address!r}: give 'auto' or HOST:PORT of a running Ray "
                          "cluster (ray://HOST:PORT for Ray Client)")
    try:
        with socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S):
            pass
    except OSError as err:
        raise ConfigError(f"the Ray cluster at {address} does not answer ({err.strerror or err}"
                          f"); start it (ray start --head) or use --ray auto") from None
    if "://" not in address:  # a GCS address: ask it for its cluster id (one try, ~1 s)
        why = _gcs_probe(target)
        if why is not None:
            raise ConfigError(f"{address} does not answer as a Ray cluster ({why}); start it "
                              "(ray start --head) or use --ray auto")


def _gcs_probe(address: str) -> str | None:
    """None when a Ray GCS answers at ``address``, else why not. Ray's client logs each
    failed try on stderr from C++; that line is kept out of the one-line error."""
    try:
        from ray._raylet import GcsClient
    except ImportError:  # pragma: no cover - an older Ray: the TCP check only
        return None
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            try:
                _ = GcsClient(address=address).cluster_id
            except Exception as err:
                text = str(err).strip().splitlines()
                return text[0][:200] if text else type(err).__name__
    finally:
        os.dup2(saved, 2)
        os.close(saved)
    return None


class ShardWorker:
    """A Ray actor: loads the job's network once, renders shards on request."""

    def __init__(self, cfg: dict[str, Any], digest: str, on_files: Any = None) -> None:
        import torch

        from gaf_trt.generate.render import prepare_job

        if not torch.cuda.is_available():
            torch.set_num_threads(1)  # a CPU fraction: one thread
        self.job = prepare_job(GenerateConfig.from_dict(cfg))
        self.digest = digest
        self.hooks = Hooks(on_files=on_files)

    def run(self, start: int, stop: int) -> dict[str, Any]:
        return render_shard(self.job, self.digest, start, stop, self.hooks)

    def pid(self) -> int:
        """The worker's process id (ready once the network is loaded)."""
        return os.getpid()


def _start(ray: Any, address: str) -> bool:
    """Connect (or start a local cluster); True when this call started Ray."""
    if ray.is_initialized():
        return False
    if address == "auto":
        ray.init(address="local", include_dashboard=False, logging_level=logging.WARNING,
                 log_to_driver=False)
    else:
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
    return True


def check_workers(workers: int | None) -> None:
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int)
                                or not 1 <= workers <= MAX_WORKERS):
        raise ConfigError(f"--workers must be an integer in 1..{MAX_WORKERS}, got {workers!r}")


def _actor_options(ray: Any, workers: int | None) -> tuple[int, dict[str, Any]]:
    gpus = int(ray.cluster_resources().get("GPU", 0))
    n = workers if workers is not None else (gpus or 2)
    res = {"num_gpus": 1} if gpus else {"num_cpus": CPU_ACTOR_SHARE}
    return n, {**res, "max_restarts": MAX_RETRIES, "max_task_retries": MAX_RETRIES}


def _task_error(err: Exception) -> Exception:
    """A worker's failure as one line: its GAFError message, or the Ray error's first line."""
    cause = getattr(err, "cause", None)
    if isinstance(cause, GAFError):
        return ConfigError(str(cause))
    text = str(err).strip().splitlines()
    return RuntimeError(f"Ray worker failed: {text[0] if text else type(err).__name__}")


@RUNNERS.register("ray")
def run_ray(cfg: GenerateConfig, opts: RunOptions) -> GenerateResult:
    """Render the pending shards on Ray actors; the driver keeps ``dataset.json``."""
    from gaf_trt.generate.render import prepare_job

    ray = _ray()
    check_workers(opts.workers)
    if opts.ray_address != "auto":
        check_address(opts.ray_address)
    job = prepare_job(cfg)
    driver = Driver(job)
    pending = driver.open()
    started = False
    actors: list[Any] = []
    try:
        started = _start(ray, opts.ray_address)
        n, options = _actor_options(ray, opts.workers)
        actor_cls = ray.remote(ShardWorker).options(**options)
        actors = [actor_cls.remote(cfg.to_dict(), driver.digest, opts.hooks.on_files)
                  for _ in range(min(n, max(len(pending), 1)))]
        ray.get([a.pid.remote() for a in actors])  # every network loaded
        driver.start_clock()
        _dispatch(ray, actors, pending, driver, opts.hooks)
        driver.collect(pending)
    except BaseException:
        driver.close()
        raise
    finally:
        for a in actors:
            ray.kill(a)
        if started:
            ray.shutdown()
    return driver.finish("ray", len(actors))


def _dispatch(ray: Any, actors: list[Any], pending: list[tuple[int, int]], driver: Driver,
              hooks: Hooks) -> None:
    """One shard per actor at a time; as each finishes, record it and hand out the next."""
    queue = list(pending)
    inflight: dict[Any, Any] = {}

    def submit(actor: Any) -> None:
        if queue:
            s, e = queue.pop(0)
            inflight[actor.run.remote(s, e)] = actor

    for a in actors:
        submit(a)
    while inflight:
        done, _ = ray.wait(list(inflight), num_returns=1)
        actor = inflight.pop(done[0])
        try:
            seal = ray.get(done[0])
        except Exception as err:
            raise _task_error(err) from None
        driver.finished(seal, hooks)
        submit(actor)
