"""Sweep points on a GPU: the CPU threads they get, and their share of one GPU's memory.

Threads (`threads_by_device`): a run on the GPU gets one BLAS thread by default, since its host side
is one thread that launches kernels and waits on them; GPU runs of one thread each may outnumber the
cores (`nnrun.workers.thread_budget`). A sweep with any point on the CPU keeps the CPU rule,
jobs x threads <= cores.

Memory (`gpu_budget`): before anything runs, each GPU point's need is estimated as a run checks its
own (`nnrun.experiment.gpu_bytes`: training its network plus the splits it uploads as float32), each
distinct data section loaded once. The GPU runs at a time (`--jobs`, or fewer points) times the
largest need plus a worker's CUDA context (`CONTEXT_BYTES`) must fit `MEMORY_SHARE` of the GPU's
free memory, else the sweep is refused (`UserInputError`, exit 2) with the figures and the largest
`--jobs` that fits. Each worker caps CuPy's default memory pool at its equal share (`limit_pool`),
so that a run needing more than estimated fails alone instead of starving the others, and gives
the pool's cached blocks back when its run ends (`release_pool`). CuPy is imported only for GPU
points; on a remote Dask cluster the GPUs are the workers' and are not checked here.
"""

from __future__ import annotations

import copy
import json
import sys
from dataclasses import dataclass
from typing import Any

from nnrun.backend import device_memory, device_module
from nnrun.config import validate_config
from nnrun.errors import UserInputError
from nnrun.experiment import MEMORY_SHARE, build_loss, gpu_bytes, load_data, preprocessed_width, select_targets
from nnrun.resources import human_bytes
from nnrun.sweep.plan import SweepPoint
from nnrun.workers import thread_budget

CONTEXT_BYTES = 640 << 20
"""GPU memory a worker process takes outside CuPy's pool: its CUDA context and cuBLAS handle (592 MiB measured on
an H200 with CUDA 13 and CuPy 14, 600 MiB in nvidia-smi for a worker training on digits)."""


def on_gpu(point: SweepPoint) -> bool:
    """Whether the point's config trains on the GPU (`train.device: gpu`)."""
    return point.config.get("train", {}).get("device") == "gpu"


def threads_by_device(points: list[SweepPoint], jobs: int, threads: int | None) -> dict[str, int]:
    """BLAS threads per run for each device the points use: `cpu` (cores // jobs) and `gpu` (one), or `threads`
    for both; a `UserInputError` when the CPU rule (or `--threads` above one on the GPU) exceeds the cores."""
    devices = sorted({"gpu" if on_gpu(p) else "cpu" for p in points})
    return {device: thread_budget(jobs, threads, gpu=device == "gpu") for device in devices}


@dataclass
class GpuBudget:
    """How GPU runs share the GPU: `runs` at a time, the GPU's `free` bytes when the sweep started, the
    `largest` estimated need (of the point `largest_label`) and each worker's pool limit, `share`."""

    runs: int
    free: int
    largest: int
    largest_label: str
    share: int

    def report(self) -> dict[str, Any]:
        """The budget as a JSON-ready object."""
        return {"runs_at_once": self.runs, "free_bytes": self.free, "largest_run_bytes": self.largest,
                "largest_run": self.largest_label, "pool_limit_bytes": self.share}


def estimates(points: list[SweepPoint]) -> dict[int, int]:
    """Each point's estimated GPU bytes (`nnrun.experiment.gpu_bytes`) by point index; the data of each distinct
    data and loss section are loaded once (and dropped before the next)."""
    groups: dict[str, list[SweepPoint]] = {}
    for point in points:
        groups.setdefault(json.dumps([point.config["data"], point.config["loss"]], sort_keys=True), []).append(point)
    needs: dict[int, int] = {}
    for group in groups.values():
        data = loss = None
        for point in group:
            cfg = validate_config(copy.deepcopy(point.config), source=f"sweep point {point.index + 1}")
            if data is None or loss is None:
                data = select_targets(load_data(cfg), cfg.loss)
                loss = build_loss(cfg.loss, data)
            needs[point.index] = gpu_bytes(cfg, data, loss, preprocessed_width(cfg.preprocess, data.n_features))
    return needs


def gpu_budget(points: list[SweepPoint], jobs: int) -> GpuBudget | None:
    """The memory budget of the GPU points among `points` run `jobs` at a time (module docstring); None when no
    point is on the GPU. Refuses (`UserInputError`) when they do not fit the GPU's free memory."""
    gpu_points = [p for p in points if on_gpu(p)]
    if not gpu_points:
        return None
    free = device_memory(device_module("gpu")) or 0
    needs = estimates(gpu_points)
    largest_point = max(gpu_points, key=lambda p: needs[p.index])
    largest = needs[largest_point.index]
    runs = min(jobs, len(gpu_points))
    usable = int(MEMORY_SHARE * free)
    share = usable // runs - CONTEXT_BYTES
    if largest <= share:
        return GpuBudget(runs, free, largest, largest_point.label, share)
    fits = usable // (largest + CONTEXT_BYTES)
    each = largest + CONTEXT_BYTES
    what = (f"{runs} GPU runs at once (--jobs {jobs}) need about {runs} x {human_bytes(each)} = "
            f"{human_bytes(runs * each)} of GPU memory" if runs > 1 else
            f"a GPU run needs about {human_bytes(each)} of GPU memory")
    advice = (f"use at most --jobs {fits}" if fits >= 1 else
              "even one run does not fit: use fewer or narrower layers (model.hidden) or smaller batches "
              "(train.batch_size), or train.device: cpu")
    raise UserInputError(f"{what} (the largest run, {largest_point.label}, about {human_bytes(largest)}, plus "
                         f"{human_bytes(CONTEXT_BYTES)} for its worker's CUDA context), and the GPU has "
                         f"{human_bytes(free)} free, of which runs may plan to use {MEMORY_SHARE:.0%} "
                         f"({human_bytes(usable)}); {advice}")


def limit_pool(limit: int) -> int:
    """Cap this process's CuPy default memory pool at `limit` bytes; returns the limit CuPy reports."""
    import cupy

    pool = cupy.get_default_memory_pool()
    pool.set_limit(size=limit)
    return int(pool.get_limit())


def release_pool() -> None:
    """Give the cached blocks of this process's CuPy pool back to the GPU (between the runs of a worker)."""
    cupy = sys.modules.get("cupy")
    if cupy is not None:
        cupy.get_default_memory_pool().free_all_blocks()
