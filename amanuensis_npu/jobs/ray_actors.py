"""The same job on Ray: one model actor per node (or `--workers N`), the driver writes everything.

Ray Core actors keep a loaded model each (one NPU per node); the driver sends each file's
bytes (so workers need no shared file system), keeps two files queued per actor so none
waits for the next, and writes outputs and journal itself as results come back
(`ray.wait`). A worker that dies takes only its queued files with it: the driver replaces
the actor and sends them again; a file that kills workers three times is reported failed.
Ray is an optional extra (`pip install 'amanuensis-npu[ray]'`). API used: `ray.init`,
`ray.remote` actors with `num_cpus` and `NodeAffinitySchedulingStrategy`, `ray.wait`,
`ray.get`, `ray.kill`, `ray.nodes` and `ray.exceptions.RayError` (ray 2.x, python/ray/).
"""

from __future__ import annotations

import io
import logging
import os
import time
import warnings
from collections import deque
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from ..messages import one_line
from .transcriber import FileResult, Transcriber

if TYPE_CHECKING:
    from .settings import JobSettings, Task

logger = logging.getLogger("amanuensis_npu")

INSTALL_HINT = "--ray needs Ray: pip install 'amanuensis-npu[ray]'"
QUEUED_PER_ACTOR = 2
MAX_ATTEMPTS = 3  # a file that takes down this many workers is reported, not retried forever


class RayUnavailable(RuntimeError):
    """Ray is not installed (or cannot be reached)."""


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise RayUnavailable(INSTALL_HINT) from None
    return ray


class TranscriberActor:
    """A model in a Ray worker process; methods run one at a time, in order of arrival."""

    def __init__(
        self, model_options: dict[str, Any], decode_options: dict[str, Any], batch_size: Any
    ) -> None:
        self.error: str | None = None
        try:
            self.transcriber = Transcriber(model_options, decode_options, batch_size)
        except Exception as exc:  # reported by `ready`, in one line, by the driver
            self.error = one_line(exc)

    def ready(self) -> tuple[int, str | None]:
        """This worker's pid, and why its model did not load (None when it did)."""
        return os.getpid(), self.error

    def transcribe(self, name: str, data: bytes) -> tuple[bool, Any]:
        """(True, FileResult) or (False, one-line reason); only a dead worker raises."""
        if self.error:
            return False, self.error
        try:
            audio = Transcriber.load(io.BytesIO(data), name)
            return True, self.transcriber(audio)
        except Exception as exc:
            return False, one_line(exc)


def run_on_ray(
    tasks: list[Task], settings: JobSettings
) -> Iterator[tuple[Task, FileResult | BaseException, float]]:
    """Transcribe `tasks` on Ray actors, yielding each outcome as it arrives."""
    ray = import_ray()
    threads = int(settings.model_options.get("cpu_threads") or 0) or 1
    model_options = {**settings.model_options, "cpu_threads": threads}
    started_ray = _connect(ray, settings.ray_address, threads * (settings.workers or 1))
    actors: list[Any] = []
    try:
        placements = _placements(ray, settings.workers, threads)
        remote_cls = ray.remote(TranscriberActor)

        def start(slot: int) -> Any:
            options: dict[str, Any] = {"num_cpus": threads, "max_restarts": 0}
            if placements[slot] is not None:
                from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

                options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(
                    placements[slot], soft=True
                )
            return remote_cls.options(**options).remote(
                model_options, settings.decode_options, settings.batch_size
            )

        actors.extend(start(i) for i in range(len(placements)))
        # Every model loads at once; a model that cannot load is one error, before any file.
        states = ray.get([a.ready.remote() for a in actors])
        for _, error in states:
            if error:
                raise RuntimeError(error)
        logger.info("Ray workers: %s", ", ".join(f"pid {pid}" for pid, _ in states))
        yield from _schedule(ray, tasks, actors, start)
    finally:
        for actor in actors:  # replaced ones included: `_schedule` swaps them in place
            ray.kill(actor)
        if started_ray:
            ray.shutdown()  # an embedded cluster stops; a joined one is only left


def _connect(ray: Any, address: str | None, cpus_needed: int) -> bool:
    """Start or join Ray unless this process already has; whether we did."""
    if ray.is_initialized():
        return False
    verbose = logging.getLogger("amanuensis_npu").isEnabledFor(logging.INFO)
    if not verbose:  # Ray's start-up notices are not ours to print
        logging.getLogger("ray").setLevel(logging.ERROR)
    options: dict[str, Any] = {
        "log_to_driver": verbose,
        "logging_level": logging.INFO if verbose else logging.ERROR,
    }
    if address in ("local", None):
        # An embedded single-node cluster: enough logical CPUs for the actors asked for.
        options.update(
            include_dashboard=False, num_cpus=max(os.cpu_count() or 1, cpus_needed)
        )
    else:
        options["address"] = address
    try:
        with warnings.catch_warnings():
            if not verbose:  # e.g. Ray Client's two-line timeout warning before our one line
                warnings.simplefilter("ignore")
            ray.init(**options)
    except Exception as exc:
        raise RayUnavailable(f"cannot start or reach Ray at {address}: {exc}") from None
    return True


def _placements(ray: Any, workers: int | None, threads: int) -> list[str | None]:
    """Node ids to pin actors to: one per alive node, or `workers` actors placed by Ray."""
    if workers:
        cpus = ray.cluster_resources().get("CPU", 0)
        if workers * threads > cpus:
            raise RuntimeError(
                f"--workers {workers} with {threads} thread(s) each needs {workers * threads} "
                f"CPUs; the Ray cluster has {cpus:g}"
            )
        return [None] * workers
    nodes = [n["NodeID"] for n in ray.nodes() if n.get("Alive")]
    if not nodes:
        raise RuntimeError("the Ray cluster has no alive node")
    return nodes


def _schedule(
    ray: Any, tasks: list[Task], actors: list[Any], start: Any
) -> Iterator[tuple[Task, FileResult | BaseException, float]]:
    waiting = deque(tasks)
    in_flight: dict[Any, tuple[Task, int, float]] = {}
    load = [0] * len(actors)
    attempts: dict[str, int] = {}

    def fill() -> None:
        while waiting:
            slot = min(range(len(actors)), key=lambda i: load[i])
            if load[slot] >= QUEUED_PER_ACTOR:
                return
            task = waiting.popleft()
            try:
                with open(task.input.path, "rb") as fh:
                    data = fh.read()
            except OSError as exc:
                failed.append((task, OSError(f"{task.input.shown}: {exc.strerror}")))
                continue
            ref = actors[slot].transcribe.remote(task.input.shown, data)
            in_flight[ref] = (task, slot, time.time())
            load[slot] += 1

    failed: list[tuple[Task, BaseException]] = []
    fill()
    while in_flight or failed:
        while failed:
            task, exc = failed.pop()
            yield task, exc, time.time()
        if not in_flight:
            fill()
            continue
        ready, _ = ray.wait(list(in_flight), num_returns=1)
        ref = ready[0]
        task, slot, started = in_flight.pop(ref)
        load[slot] -= 1
        try:
            ok, value = ray.get(ref)
        except ray.exceptions.RayError as exc:  # the worker died: its files go elsewhere
            attempts[task.input.path] = attempts.get(task.input.path, 0) + 1
            lost = [task] + [t for r, (t, s, _) in list(in_flight.items()) if s == slot]
            for r in [r for r, (_, s, _) in in_flight.items() if s == slot]:
                del in_flight[r]
            load[slot] = 0
            logger.warning(
                "a Ray worker was lost (%s); its %d file(s) are sent to another",
                one_line(exc),
                len(lost),
            )
            ray.kill(actors[slot], no_restart=True)
            for t in reversed(lost):
                if attempts.get(t.input.path, 0) >= MAX_ATTEMPTS:
                    lost_error = RuntimeError(f"{t.input.shown}: lost {MAX_ATTEMPTS} workers")
                    failed.append((t, lost_error))
                else:
                    waiting.appendleft(t)
            actors[slot] = start(slot)
            fill()
            continue
        if ok:
            yield task, value, started
        else:
            yield task, RuntimeError(value), started
        fill()
