"""Orchestration overhead: the demo campaign through a real Prefect server + process worker vs
``evallab run``.

Starts a real ``prefect server start`` (SQLite, private PREFECT_HOME, analytics and UI off), runs
``evallab prefect setup`` (work pools, the GPU concurrency limit, blocks, deployments from
prefect.yaml) and one ``prefect worker start --pool gpu``. Then runs deployments/demo.yaml end
to end both ways:

  (a) ``evallab submit --no-resume deployments/demo.yaml``, then polling the flow run (once a
      second) until it is COMPLETED: wall time from submit to the COMPLETED state's timestamp;
  (b) ``evallab run deployments/demo.yaml``: the CLI's wall time.

One warm-up of each (it also builds the tiny models into the shared model cache), then
EVALLAB_BENCH_PAIRS pairs (default 3), alternated (the order flips every pair). Every run gets a
fresh scratch PostgreSQL (EVALLAB_DATABASE_URL; for (a) the results block is re-saved by
``evallab prefect bootstrap-blocks``) and a fresh runs folder, so both do the same work: build no
model, evaluate both models, store both runs. Both run from the repository with the same
environment. Prints each pair, where the time goes (Prefect's flow-run states and task runs, and
both drivers' campaign rows), CPU seconds used by each side (campaign process, submit, server,
worker: a figure much less disturbed by other load on the machine than wall time), the medians,
and the ratio median(a)/median(b).

Every process it starts (server, worker, the worker's flow-run processes, the CLIs) carries a
marker in its environment; on exit, error or SIGTERM their process groups are stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from benchlib import scratch_postgres

from evallab.runtimes.process import free_port

REPO = Path(__file__).resolve().parents[1]
CAMPAIGN = REPO / "deployments" / "demo.yaml"
PAIRS = int(os.environ.get("EVALLAB_BENCH_PAIRS", "3"))
RUN_TIMEOUT_S = 1800
GOAL = 1.10
# Deployment settings of the worker (legitimate for a lab that wants campaigns to start quickly):
# poll the pool every second; don't pick up runs scheduled in the future (there are none).
WORKER_SETTINGS = {
    "PREFECT_WORKER_QUERY_SECONDS": "1",
    "PREFECT_WORKER_PREFETCH_SECONDS": "0",
}
MARKER = "EVALLAB_BENCH_PREFECT_OVERHEAD"
CAMPAIGN_CPU = "campaign process (evallab run / flow run)"
TOKEN = uuid.uuid4().hex
_BIN = Path(sys.executable).parent
EVALLAB = (
    [str(_BIN / "evallab")]
    if (_BIN / "evallab").exists()
    else [sys.executable, "-m", "evallab.cli"]
)


# ------------------------------------------------------------------------------- processes


def _marked_pgids() -> set[int]:
    """Process groups of every live process that carries this bench's marker."""
    needle = f"{MARKER}={TOKEN}".encode()
    groups = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            environ = Path(f"/proc/{entry}/environ").read_bytes()
            if needle in environ.split(b"\0"):
                groups.add(os.getpgid(int(entry)))
        except (OSError, ProcessLookupError):
            continue
    groups.discard(os.getpgrp())
    return groups


def stop_group(pgid: int, grace: float = 20) -> None:
    """SIGTERM a process group, wait for it to go, then SIGKILL what is left."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


def stop_everything_marked(keep: frozenset[int] = frozenset()) -> None:
    """Stop every process group this bench started (the worker's flow runs included)."""
    for pgid in _marked_pgids() - keep:
        stop_group(pgid, grace=10)


_TICK = os.sysconf("SC_CLK_TCK")


def _stats() -> list[list[str]]:
    """``/proc/PID/stat`` of every live process, split after the command name."""
    rows = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                raw = Path(f"/proc/{entry}/stat").read_text()
                rows.append([entry, *raw[raw.rindex(")") + 2 :].split()])
    return rows


def group_cpu(pgid: int) -> tuple[float, float]:
    """CPU seconds of a process group: (its live processes, the children they reaped)."""
    own = reaped = 0.0
    for row in _stats():
        if int(row[3]) == pgid:  # pid, state, ppid, pgrp, ..., utime stime cutime cstime
            own += (int(row[12]) + int(row[13])) / _TICK
            reaped += (int(row[14]) + int(row[15])) / _TICK
    return own, reaped


def children_cpu() -> float:
    """CPU seconds of this process's children that have been waited for."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def wait_reaped(parent: int, timeout: float = 120) -> None:
    """Wait until ``parent`` has reaped its children outside its own group (flow runs)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(int(r[2]) == parent and int(r[3]) != parent for r in _stats()):
            return
        time.sleep(0.2)
    raise SystemExit(f"the worker's flow-run process still runs {timeout:.0f} s after COMPLETED")


def run_cmd(
    argv: list[str], env: Mapping[str, str], timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """Run a command in its own process group; the whole group goes if anything goes wrong."""
    proc = subprocess.Popen(
        argv,
        cwd=REPO,
        env=dict(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except BaseException:
        stop_group(proc.pid, grace=5)
        proc.wait()
        raise
    result = subprocess.CompletedProcess(argv, proc.returncode, out, err)
    if result.returncode != 0:
        raise SystemExit(
            f"{' '.join(argv[1:])} failed ({result.returncode}):\n{(out + err)[-4000:]}"
        )
    return result


@contextlib.contextmanager
def background(argv: list[str], env: Mapping[str, str], log: Path) -> Iterator[subprocess.Popen]:
    """A long-lived process in its own group, logging to ``log``; stopped on the way out."""
    with log.open("wb") as fh:
        proc = subprocess.Popen(
            argv, cwd=log.parent, env=dict(env), stdout=fh, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    try:
        yield proc
    finally:
        stop_group(proc.pid)
        proc.wait()


def wait_until(what: str, check: Any, timeout: float, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if check():
                return
        time.sleep(0.25)
    tail = log.read_text(errors="replace")[-3000:] if log else ""
    raise SystemExit(f"{what}: not after {timeout:.0f} s\n{tail}")


# ------------------------------------------------------------------------------------ runs


def ts(value: str | None) -> float:
    return datetime.fromisoformat(value).timestamp() if value else float("nan")


@dataclass
class Sample:
    """One timed run and where its time went (seconds)."""

    driver: str
    wall: float
    phases: dict[str, float] = field(default_factory=dict)
    tasks: dict[str, float] = field(default_factory=dict)
    timeline: list[str] = field(default_factory=list)
    cpu: dict[str, float] = field(default_factory=dict)  # CPU seconds used during the run
    load: float = 0.0  # 1-minute load average when it finished (the machine may be shared)


async def _campaign_rows(dsn: str) -> tuple[asyncpg.Record, list[asyncpg.Record]]:
    conn = await asyncpg.connect(dsn)
    try:
        campaigns = await conn.fetch("SELECT * FROM campaigns")
        runs = await conn.fetch("SELECT * FROM runs ORDER BY started_at")
    finally:
        await conn.close()
    if len(campaigns) != 1 or campaigns[0]["status"] != "succeeded":
        raise SystemExit(f"expected one succeeded campaign, found {[dict(c) for c in campaigns]}")
    if len(runs) != 2 or any(r["status"] != "succeeded" for r in runs):
        raise SystemExit(f"expected two succeeded runs, found {[r['status'] for r in runs]}")
    return campaigns[0], runs


def db_phases(dsn: str, runs_dir: Path, driver: str, t0: float, t_end: float) -> dict[str, float]:
    """Check the run did the whole campaign here; split its wall time by the campaign row."""
    campaign, runs = asyncio.run(_campaign_rows(dsn))
    if campaign["driver"] != driver:
        raise SystemExit(f"campaign driver {campaign['driver']!r}, expected {driver!r}")
    for run in runs:
        if not Path(run["raw_path"]).is_relative_to(runs_dir):
            raise SystemExit(f"raw outputs at {run['raw_path']}, expected under {runs_dir}")
    opened, closed = campaign["started_at"].timestamp(), campaign["finished_at"].timestamp()
    return {
        "start→campaign row": opened - t0,
        "campaign row open": closed - opened,
        "  of which runs": sum(r["duration_s"] or 0.0 for r in runs),
        "campaign closed→done": t_end - closed,
    }


def cli_run(env: dict[str, str]) -> tuple[float, float]:
    """``evallab run``: (start, end) epoch seconds."""
    t0 = time.time()
    run_cmd([*EVALLAB, "run", str(CAMPAIGN)], env, timeout=RUN_TIMEOUT_S)
    return t0, time.time()


def prefect_run(env: dict[str, str], api: httpx.Client) -> tuple[float, dict[str, Any]]:
    """``evallab submit``, then poll the flow run until COMPLETED: (start, details).

    Polls once a second: each request costs the server CPU time, which on a small machine the
    campaign would pay for. The end is the COMPLETED state's own timestamp, not the poll's.
    """
    t0 = time.time()
    out = run_cmd([*EVALLAB, "submit", "--no-resume", str(CAMPAIGN)], env, timeout=300).stdout
    t_submitted = time.time()
    flow_run_id = out.strip().rsplit("(", 1)[1].split(")")[0]
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while True:
        state = api.get(f"/flow_runs/{flow_run_id}").json()["state_type"]
        if state == "COMPLETED":
            break
        if state in ("FAILED", "CRASHED", "CANCELLED", "CANCELLING"):
            raise SystemExit(f"flow run {flow_run_id} ended {state}")
        if time.monotonic() > deadline:
            raise SystemExit(f"flow run {flow_run_id} not finished after {RUN_TIMEOUT_S} s")
        time.sleep(1.0)
    flow_filter = {"flow_runs": {"id": {"any_": [flow_run_id]}}}
    info = {
        "submitted": t_submitted,
        "seen": time.time(),
        "states": api.get("/flow_run_states/", params={"flow_run_id": flow_run_id}).json(),
        "task_runs": api.post("/task_runs/filter", json={**flow_filter, "limit": 200}).json(),
        "logs": api.post(
            "/logs/filter",
            json={"logs": {"flow_run_id": {"any_": [flow_run_id]}}, "sort": "TIMESTAMP_ASC"},
        ).json(),
    }
    return t0, info


def completed_at(info: dict[str, Any]) -> float:
    return min(ts(s["timestamp"]) for s in info["states"] if s["type"] == "COMPLETED")


def prefect_phases(t0: float, info: dict[str, Any]) -> tuple[dict[str, float], dict[str, float]]:
    """Split submit→completed by the flow run's states and its task runs (server timestamps)."""
    first: dict[str, float] = {}
    for s in sorted(info["states"], key=lambda s: s["timestamp"]):
        first.setdefault(s["type"], ts(s["timestamp"]))
    created, done = first["SCHEDULED"], first["COMPLETED"]
    pending, running = first.get("PENDING", created), first["RUNNING"]
    steps: dict[str, float] = defaultdict(float)
    starts, ends = [], []
    for tr in info["task_runs"]:
        steps[tr["name"].split(" · ")[0]] += tr["total_run_time"]
        starts.append(ts(tr["start_time"]))
        ends.append(ts(tr["end_time"]))
    in_tasks = sum(steps.values())
    phases = {
        "submit→flow run created": created - t0,
        "created→PENDING (worker poll)": pending - created,
        "PENDING→RUNNING (flow process start)": running - pending,
        "RUNNING→first task": min(starts) - running,
        "task runs (sum)": in_tasks,
        "between tasks (GPU limit, artifacts...)": (max(ends) - min(starts)) - in_tasks,
        "last task→COMPLETED": done - max(ends),
        "(evallab submit process exited at)": info["submitted"] - t0,
        "(COMPLETED→seen by the 1 s poll)": info["seen"] - done,
        "(COMPLETED→flow process gone)": info["gone"] - done,
    }
    return phases, dict(steps)


def timeline(t0: float, info: dict[str, Any], until: str = "Beginning flow run") -> list[str]:
    """The flow run's log lines (worker and flow) up to the first step, as offsets from submit."""
    lines = []
    for log in info["logs"]:
        lines.append(f"    +{ts(log['timestamp']) - t0:6.2f} s  {log['message'][:110]}")
        if until in log["message"]:
            break
    return lines


# ------------------------------------------------------------------------------------ main


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="evallab-bench-prefect-"))
    port = free_port()
    url = f"http://127.0.0.1:{port}/api"
    env = {
        **os.environ,
        MARKER: TOKEN,
        "PREFECT_HOME": str(tmp / "prefect-home"),
        "PREFECT_API_URL": url,
        "DO_NOT_TRACK": "1",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_UI_ENABLED": "false",
        "PREFECT_LOGGING_LEVEL": "INFO",
        **WORKER_SETTINGS,
        # The lab: a shared model cache (the warm-ups build the tiny models), a fresh runs folder
        # per run (EVALLAB_RUNS_DIR, below), the leaderboard the flow publishes kept in here.
        "EVALLAB_HOME": str(tmp / "lab-home"),
        "EVALLAB_REPORT_DIR": str(tmp / "site"),
        "CUDA_VISIBLE_DEVICES": "0",
        "TQDM_DISABLE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "COLUMNS": "200",
    }
    for name in ("EVALLAB_DATABASE_URL", "EVALLAB_CONFIG", "EVALLAB_RUNS_DIR", "PREFECT_PROFILE"):
        env.pop(name, None)
    (tmp / "prefect-home").mkdir()
    # The worker's flow runs read EVALLAB_RUNS_DIR from its environment: a link, re-pointed to a
    # fresh folder before each run.
    runs_link = tmp / "runs-current"
    worker_env = {**env, "EVALLAB_RUNS_DIR": str(runs_link)}

    print(f"campaign: {CAMPAIGN.relative_to(REPO)}; {PAIRS} pairs after one warm-up of each")
    print("worker settings: " + ", ".join(f"{k}={v}" for k, v in WORKER_SETTINGS.items()))
    print("Prefect: server on SQLite, UI off, analytics off, PREFECT_LOGGING_LEVEL=INFO\n")

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        with (
            background(
                [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
                 "--port", str(port)],
                env, tmp / "server.log",
            ) as server,
            httpx.Client(base_url=url, timeout=30) as api,
        ):  # fmt: skip
            wait_until(
                "prefect server healthy",
                lambda: api.get("/health").status_code == 200,
                120,
                tmp / "server.log",
            )
            t = time.monotonic()
            setup = run_cmd([*EVALLAB, "prefect", "setup"], env, timeout=600)
            print(f"evallab prefect setup: {time.monotonic() - t:.1f} s")
            print(setup.stdout.strip())
            with background(
                [sys.executable, "-m", "prefect", "worker", "start", "--pool", "gpu",
                 "--name", "bench-gpu-0"],
                worker_env, tmp / "worker.log",
            ) as worker:  # fmt: skip
                wait_until(
                    "worker online",
                    lambda: any(
                        w["name"] == "bench-gpu-0" and w["status"] == "ONLINE"
                        for w in api.post("/work_pools/gpu/workers/filter", json={}).json()
                    ),
                    120,
                    tmp / "worker.log",
                )
                try:
                    samples = bench(env, runs_link, api, tmp, server.pid, worker.pid)
                finally:  # a flow run still going: stop it while its worker is there to reap it
                    stop_everything_marked(keep=frozenset({server.pid, worker.pid}))
    finally:
        stop_everything_marked()
        shutil.rmtree(tmp, ignore_errors=True)
    report(samples)


def bench(
    env: dict[str, str], runs_link: Path, api: httpx.Client, tmp: Path, server: int, worker: int
) -> list[Sample]:
    """Warm-ups, then the pairs; each run on a fresh database and runs folder."""
    samples: list[Sample] = []
    order = [("prefect", "cli"), ("cli", "prefect")]
    for index in range(PAIRS + 1):
        pair = []
        for driver in order[index % 2]:
            label = f"{'warm-up' if index == 0 else f'pair {index}'} {driver}"
            runs_dir = tmp / "runs" / label.replace(" ", "-")
            runs_dir.mkdir(parents=True)
            with scratch_postgres() as (dsn, _):
                run_env = {**env, "EVALLAB_DATABASE_URL": dsn}
                if driver == "prefect":
                    run_cmd([*EVALLAB, "prefect", "bootstrap-blocks"], run_env, timeout=300)
                    runs_link.unlink(missing_ok=True)
                    runs_link.symlink_to(runs_dir)
                cpu0 = (sum(group_cpu(server)), *group_cpu(worker), children_cpu())
                if driver == "cli":
                    t0, t_end = cli_run({**run_env, "EVALLAB_RUNS_DIR": str(runs_dir)})
                    sample = Sample("cli", t_end - t0)
                else:
                    t0, info = prefect_run(run_env, api)
                    t_end = completed_at(info)
                    wait_reaped(worker)  # its CPU time then counts in the worker's children
                    info["gone"] = time.time()
                    phases, tasks = prefect_phases(t0, info)
                    sample = Sample("prefect", t_end - t0, phases, tasks, timeline(t0, info))
                cpu1 = (sum(group_cpu(server)), *group_cpu(worker), children_cpu())
                server_s, worker_s, flow_s, ours_s = (
                    b - a for a, b in zip(cpu0, cpu1, strict=True)
                )
                sample.cpu = {
                    "campaign process (evallab run / flow run)": ours_s
                    if driver == "cli"
                    else flow_s,
                    "evallab submit": ours_s if driver == "prefect" else 0.0,
                    "prefect server": server_s,
                    "prefect worker (itself)": worker_s,
                }
                sample.phases |= db_phases(dsn, runs_dir.resolve(), driver, t0, t_end)
            sample.load = os.getloadavg()[0]
            print(f"{label}: {sample.wall:.1f} s  (load average {sample.load:.1f})")
            if index:
                pair.append(sample)
                samples.append(sample)
        if index:
            by = {s.driver: s for s in pair}
            print(f"  pair {index}: prefect {by['prefect'].wall:.1f} s, cli {by['cli'].wall:.1f} s,"
                  f" ratio {by['prefect'].wall / by['cli'].wall:.3f}")  # fmt: skip
    return samples


def _median_dict(dicts: list[dict[str, float]]) -> dict[str, float]:
    keys = list(dict.fromkeys(k for d in dicts for k in d))
    return {k: statistics.median(d.get(k, 0.0) for d in dicts) for k in keys}


def report(samples: list[Sample]) -> None:
    prefect = [s for s in samples if s.driver == "prefect"]
    cli = [s for s in samples if s.driver == "cli"]
    p_med = statistics.median(s.wall for s in prefect)
    c_med = statistics.median(s.wall for s in cli)
    print(f"\nprefect submit→completed (s): {[round(s.wall, 1) for s in prefect]}")
    print(f"evallab run (s):               {[round(s.wall, 1) for s in cli]}")
    print(f"medians: prefect {p_med:.1f} s, cli {c_med:.1f} s, difference {p_med - c_med:+.1f} s")
    print("\nwhere the time goes (medians, s):")
    print("  prefect:")
    for name, value in _median_dict([s.phases for s in prefect]).items():
        print(f"    {name:<40} {value:7.2f}")
    print("    task runs by step:")
    for name, value in _median_dict([s.tasks for s in prefect]).items():
        print(f"      {name:<38} {value:7.2f}")
    print(f"    first seconds of the last flow run (from its logs, {os.cpu_count()} CPUs here):")
    print("\n".join(prefect[-1].timeline))
    print("  cli:")
    for name, value in _median_dict([s.phases for s in cli]).items():
        print(f"    {name:<40} {value:7.2f}")
    # CPU seconds depend much less than wall time on what else loads the machine. The server and
    # worker are charged to Prefect; during the CLI's runs they idle (shown, not charged).
    print("\nCPU seconds used during a run (medians):          prefect       cli")
    p_cpu, c_cpu = _median_dict([s.cpu for s in prefect]), _median_dict([s.cpu for s in cli])
    for name in p_cpu:
        idle = " (idle)" if "prefect " in name else ""
        print(f"  {name:<44} {p_cpu[name]:8.1f}  {c_cpu[name]:8.1f}{idle}")
    p_total = statistics.median(sum(s.cpu.values()) for s in prefect)
    c_total = statistics.median(s.cpu[CAMPAIGN_CPU] for s in cli)
    print(f"  {'charged to the driver':<44} {p_total:8.1f}  {c_total:8.1f}"
          f"   ratio {p_total / c_total:.3f}")  # fmt: skip
    print(f"RESULT prefect_overhead {p_med / c_med:.3f} x goal <= {GOAL:.2f}")


if __name__ == "__main__":
    main()
