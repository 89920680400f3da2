"""How a campaign step runs under Prefect: a task per step, and the GPU held as a slot.

:class:`PrefectExecutor` is the Prefect driver of the lab's campaign engine (the CLI's is
:class:`evallab.campaign.LocalExecutor`): each step is a task named for the step with the
failure policy's retries declared on it, and the GPU is a global concurrency limit per GPU
(:func:`gpu_limit_name`) held only around a group's GPU work.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Callable, Iterator
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

__all__ = ["GPU_LEASE_S", "PrefectExecutor", "gpu_limit_name"]

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
    """The global concurrency limit guarding one GPU (or one worker's set of GPUs) of a host."""
    devices = os.environ.get("CUDA_VISIBLE_DEVICES", "0") if devices is None else devices
    raw = f"gpu-{host or socket.gethostname()}-{devices or 'none'}".lower()
    return re.sub(r"[^a-z0-9-]+", "-", raw).strip("-")


def _q(value: T) -> T:
    """Pass ``value`` to a task as is (Prefect doesn't walk it looking for futures)."""
    return cast(T, quote(value))


class PrefectExecutor:
    """Runs each engine step as a Prefect task; holds the GPU through a concurrency limit.

    Args:
        policy: The failure policy (retries and delays are declared on each task from it).
        gpu_limit: Name of the global concurrency limit of this worker's GPU.
    """

    def __init__(self, policy: FailurePolicy, gpu_limit: str) -> None:
        self.policy = policy
        self.gpu_limit = gpu_limit

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
        ensure_gpu_limit(self.gpu_limit)
        logger.info("%s: waiting for the GPU (concurrency limit %s)", label, self.gpu_limit)
        _name_state(f"Waiting for GPU ({self.gpu_limit})")
        with concurrency(self.gpu_limit, occupy=1, lease_duration=GPU_LEASE_S, strict=True):
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
