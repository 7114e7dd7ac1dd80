"""The Ray executor of the shard runner: the same shards as the local executor, computed by Ray actors.

1. Connect: a local Ray started here (no address), the cluster ``ray start`` made (``auto``), or
   HOST:PORT, checked with a TCP connect first so an unreachable address fails in seconds; then one
   probe task checks that the cluster's workers can import this project.
2. Start one actor per worker (``ShardWorker``): it receives the context (model, transcoders,
   corpus) once, through the object store, and takes shards. Actors restart when their process
   dies and Ray retries the shard they held, so a killed worker loses only that shard.
3. Submit every shard whose dependencies are loaded to a free actor; the driver alone appends to the
   manifest and loads into the atlas, in plan order, as results arrive (ingest/shards.py).
Workers write the shard files themselves, so the shard directory must be storage every node sees.
"""

from __future__ import annotations

import os
import socket

from atlas.errors import AtlasError

RAY_STALL_S = float(os.environ.get("ATLAS_RAY_STALL_S", 3600))  # no shard finished for this long: give up


class RayClusterError(AtlasError):
    """No Ray cluster at the address given, or one whose workers cannot run this project."""


class ShardWorker:
    """One per worker process (a GPU or a CPU slot): holds the context, computes shards."""

    def __init__(self, ctx, job):
        self.ctx, self.job = ctx, job

    def run(self, shard, inputs, shard_dir: str) -> dict:
        from ingest.shards import run_shard

        return run_shard(self.job, self.ctx, shard, inputs, shard_dir)


def _probe() -> str:
    import ingest.shards

    return ingest.shards.code_version()


def _forwarded_env() -> dict[str, str]:
    """What the workers need from the driver's environment: the import path and atlas's settings."""
    keep = ("PYTHONPATH", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    return {k: v for k, v in os.environ.items() if k in keep or k.startswith("ATLAS_")}


def connect(address: str | None, workers: int | None) -> bool:
    """Connect this process to Ray; True when it started (and so must stop) the Ray it uses."""
    import ray

    if address not in (None, "auto"):
        host, _, port = address.rpartition(":")
        try:
            socket.create_connection((host, int(port)), timeout=3).close()
        except (OSError, ValueError) as exc:
            raise RayClusterError(
                f"no Ray cluster reachable at {address!r} ({exc}); start one with "
                "`ray start --head` or use --executor local"
            ) from None
    if ray.is_initialized():
        return False
    if address is None:
        ray.init(
            num_cpus=workers or os.cpu_count(),
            include_dashboard=False,
            log_to_driver=False,
            _node_ip_address="127.0.0.1",
            configure_logging=False,
        )
        return True
    try:
        ray.init(address=address, log_to_driver=False, configure_logging=False)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise RayClusterError(f"could not join the Ray cluster at {address!r}: {exc}") from None
    return True


def check_cluster() -> str:
    """The code version the cluster's workers import; a clear error when they cannot import atlas."""
    import ray

    try:
        return ray.get(ray.remote(_probe).options(runtime_env={"env_vars": _forwarded_env()}).remote(), timeout=300)
    except Exception as exc:  # RayTaskError wrapping ModuleNotFoundError, or a timeout
        raise RayClusterError(
            "the Ray cluster's workers cannot run atlas: install the project (`make setup`, "
            f"or pip install -e .) on every node ({type(exc).__name__}: {exc})"
        ) from None


def run_on_ray(job, ctx, w, todo, reuse, shard_dir: str, executor, load) -> None:
    """Compute ``todo`` (minus ``reuse``) on Ray actors; ``load(shard, entry, computed)`` in plan order."""
    import ray

    started = connect(executor.address, executor.workers)
    try:
        from ingest.shards import code_version

        if check_cluster() != code_version():
            raise RayClusterError(
                "the Ray cluster's workers import another version of atlas than this driver "
                f"({code_version()}); install the same code on every node"
            )
        n_compute = sum(s.unit not in reuse for s in todo)
        n_cpu = int(ray.cluster_resources().get("CPU", 1))
        n = max(1, min(executor.workers or n_cpu, n_compute, n_cpu))
        ctx_ref, job_ref = ray.put(ctx), ray.put(job)
        actor_cls = ray.remote(num_cpus=1, max_restarts=3, max_task_retries=3)(ShardWorker)
        env = {"env_vars": _forwarded_env()}
        free = [actor_cls.options(runtime_env=env).remote(ctx_ref, job_ref) for _ in range(n if n_compute else 0)]
        _schedule(job, w, todo, reuse, shard_dir, free, load)
    finally:
        if started:
            ray.shutdown()


def _schedule(job, w, todo, reuse, shard_dir, free, load) -> None:
    import ray

    todo_units = {s.unit for s in todo}
    waiting = list(todo)
    loaded: set[str] = set()
    finished: dict[str, tuple[dict, bool]] = {}
    pending: dict = {}  # ObjectRef -> (shard, actor)
    next_load = 0
    while next_load < len(todo):
        for s in list(waiting):  # 1. submit what is ready
            if s.unit in reuse:
                finished[s.unit] = (reuse[s.unit], False)
                waiting.remove(s)
            elif free and all(d not in todo_units or d in loaded for d in s.deps):
                actor = free.pop()
                pending[actor.run.remote(s, job.inputs(w, s), shard_dir)] = (s, actor)
                waiting.remove(s)
        progressed = False  # 2. load what is next in plan order
        while next_load < len(todo) and todo[next_load].unit in finished:
            s = todo[next_load]
            entry, computed = finished.pop(s.unit)
            load(s, entry, computed)
            loaded.add(s.unit)
            next_load += 1
            progressed = True
        if progressed or next_load == len(todo):
            continue
        if not pending:
            raise AtlasError(f"shards {[s.unit for s in waiting]} wait on units that are not planned")
        done, _ = ray.wait(list(pending), num_returns=1, timeout=RAY_STALL_S)  # 3. collect a result
        if not done:
            raise RayClusterError(f"no shard finished in {RAY_STALL_S:.0f} s on the Ray cluster")
        for ref in done:
            s, actor = pending.pop(ref)
            try:
                finished[s.unit] = (ray.get(ref), True)
            except ray.exceptions.RayError as exc:
                raise AtlasError(f"shard {s.unit} failed on the Ray cluster: {exc}") from None
            free.append(actor)
