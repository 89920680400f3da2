"""How a campaign step runs under Prefect: a task per step, and the GPU held as a slot.

:class:`PrefectExecutor` is the Prefect driver of the lab's campaign engine (the CLI's is
:class:`evallab.campaign.LocalExecutor`): each step is a task named for the step with the
failure policy's retries declared on it, and every GPU the flow sees is a global concurrency
limit of one slot (:func:`gpu_limit_names`), all of them held only around a group's GPU work.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar, cast

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import State, TaskRun
from prefect.concurrency.sync import concurrency
from prefect.context import FlowRunContext
from prefect.utilities.annotations import quote

from blocks.bootstrap import ensure_gpu_limit
from evallab.campaign import FailurePolicy, Step, retry_message
from evallab.telemetry.devices import gpu_slot_name, gpu_slot_names
from evallab.telemetry.nvml import open_nvml

__all__ = ["GPU_LEASE_S", "PrefectExecutor", "gpu_limit_name", "gpu_limit_names"]

T = TypeVar("T")

#: Seconds a GPU slot's lease lives without renewal (a killed flow frees its GPU after this).
GPU_LEASE_S = float(os.environ.get("EVALLAB_GPU_LEASE_S", "60"))

#: Per-step task timeouts (seconds): generous, they only catch a hung step.
_TIMEOUTS = {
    Step.VERIFY_PINS: 900,
    Step.FETCH_MODEL: 6 * 3600,
    Step.PLAN: 900,
    Step.START_RUNTIME: 3600,
    Step.CANARY: 1800,
    Step.EVALUATE: 24 * 3600,
    Step.INGEST: 1800,
    Step.STOP_RUNTIME: 300,
}


def gpu_limit_name(host: str | None = None, devices: str | None = None) -> str:
    """The global concurrency limit guarding one GPU of a host: ``gpu-<host>-<index>``.

    Args:
        host: The host name (default: this machine's).
        devices: The GPU's NVML index (default: this process's ``CUDA_VISIBLE_DEVICES``, ``0``
            when unset; ``none`` when it is empty).
    """
    devices = os.environ.get("CUDA_VISIBLE_DEVICES", "0") if devices is None else devices
    return gpu_slot_name(devices or "none", host)


def gpu_limit_names(host: str | None = None, devices: str | None = None) -> list[str]:
    """The limits of every GPU this flow sees, in the one order all flows take them.

    ``CUDA_VISIBLE_DEVICES`` (or ``devices``) is mapped to NVML's indices (UUIDs and MIG ids
    included; see :mod:`evallab.telemetry.devices`), so a worker seeing ``0,1`` and a worker
    seeing ``0`` both hold ``gpu-<host>-0`` and exclude each other. Without NVML each entry
    stands for a GPU as written.

    Args:
        host: The host name (default: this machine's).
        devices: ``CUDA_VISIBLE_DEVICES`` to use (default: this process's).
    """
    value = os.environ.get("CUDA_VISIBLE_DEVICES") if devices is None else devices
    nvml = open_nvml()
    if nvml is None:
        return gpu_slot_names(value, None, host)
    try:
        return gpu_slot_names(value, nvml.list_devices(), host)
    finally:
        nvml.close()


def _q(value: T) -> T:
    """Pass ``value`` to a task as is (Prefect doesn't walk it looking for futures)."""
    return cast(T, quote(value))


class PrefectExecutor:
    """Runs each engine step as a Prefect task; holds the GPUs through concurrency limits.

    Args:
        policy: The failure policy (retries and delays are declared on each task from it).
        gpu_limits: Names of the global concurrency limits of this worker's GPUs (one per GPU;
            a single name is one GPU), taken together in the order given (:func:`gpu_limit_names`
            sorts them by GPU index).
    """

    def __init__(self, policy: FailurePolicy, gpu_limits: Sequence[str] | str) -> None:
        self.policy = policy
        names = [gpu_limits] if isinstance(gpu_limits, str) else list(gpu_limits)
        self.gpu_limits = sorted(set(names), key=names.index)

    def _retry_condition(self, step: Step, label: str) -> Callable[[Any, TaskRun, State], bool]:
        def condition(_task: Any, task_run: TaskRun, state: State) -> bool:
            exc = state.result(raise_on_failure=False)
            if not isinstance(exc, BaseException):
                return False
            attempt = task_run.run_count
            retry = self.policy.should_retry(step, exc, attempt)
            if retry:
                decision = self.policy.decide(step, exc)
                delay = decision.delays_s[attempt - 1]
                get_run_logger().warning(
                    "%s", retry_message(step, label, exc, attempt, decision.retries, delay)
                )
            return retry

        return condition

    def run(
        self, step: Step, label: str, fn: Callable[..., T], *args: Any, retry: bool = True
    ) -> T:
        delays = self.policy.retry_delays(step) if retry else ()
        step_task = task(  # type: ignore[call-overload]
            fn,
            name=str(step),
            task_run_name=lambda: f"{step} · {label}",
            retries=len(delays),
            retry_delay_seconds=list(delays) if delays else 0,
            retry_condition_fn=self._retry_condition(step, label),
            timeout_seconds=_TIMEOUTS.get(step),
            cache_policy=NO_CACHE,
            persist_result=False,
        )
        return cast(T, step_task(*[_q(a) for a in args]))

    @contextmanager
    def gpu(self, label: str) -> Iterator[None]:
        logger = get_run_logger()
        names = ", ".join(self.gpu_limits)
        for name in self.gpu_limits:
            ensure_gpu_limit(name)
        logger.info("%s: waiting for the GPU (concurrency limit %s)", label, names)
        _name_state(f"Waiting for GPU ({names})")
        # One request for every GPU's slot: Prefect grants all of them or none, and the names
        # are in the same order for every flow, so two flows sharing a GPU never hold one slot
        # each while waiting for the other's.
        with concurrency(self.gpu_limits, occupy=1, lease_duration=GPU_LEASE_S, strict=True):
            _name_state("Running")
            logger.info("%s: holds the GPU", label)
            yield
        logger.info("%s: released the GPU", label)


def _name_state(name: str) -> None:
    """Show ``name`` as this flow run's state in the UI (still a RUNNING state)."""
    from prefect.client.orchestration import get_client
    from prefect.states import Running

    ctx = FlowRunContext.get()
    if ctx is None or ctx.flow_run is None:
        return
    with get_client(sync_client=True) as client:
        client.set_flow_run_state(ctx.flow_run.id, Running(name=name), force=True)
