"""SIGKILL either driver at random moments, resume after each: the database ends up exactly as an
uninterrupted campaign leaves it, with no orphan process and no campaign left ``running``."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from evallab.runtimes.process import group_pids
from tests.flows.helpers import PrefectServer
from tests.helpers import EVALLAB, REPO, campaign_yaml, fetch

pytestmark = [pytest.mark.prefect_server, pytest.mark.slow]

KILLS = int(os.environ.get("EVALLAB_KILL_TEST_KILLS", "3"))
BENCHMARKS = """  - {name: mc, tasks: [demo_mc], limit: 4}
  - {name: gen, tasks: [demo_gen], limit: 4}
  - {name: mc0, tasks: [demo_mc], limit: 3, num_fewshot: 0}
"""


def start(driver: str, path: Path, env: dict[str, str], attempt: int) -> subprocess.Popen[bytes]:
    if driver == "cli":
        cmd = [*EVALLAB, "run", "--resume", str(path)]
    else:
        code = (
            f"import sys; sys.path.insert(0, {str(REPO)!r})\n"
            "from flows.campaign import campaign\n"
            f"campaign(campaign_path={str(path)!r}, resume=True)\n"
        )
        cmd = [sys.executable, "-c", code]
        # A killed flow's GPU slot is freed by Prefect's lease expiry (60 s at least); each
        # attempt takes the slot of its own "GPU" so the test doesn't wait for it.
        env = {**env, "CUDA_VISIBLE_DEVICES": f"k{attempt}"}
    return subprocess.Popen(
        cmd,
        cwd=path.parent,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def results(dsn: str) -> dict[str, object]:
    """Succeeded runs, scores and per-document outcomes, keyed by what a user compares."""
    runs = fetch(
        dsn,
        "SELECT benchmark, run_key, count(*) AS n FROM runs WHERE status = 'succeeded' "
        "GROUP BY 1, 2 ORDER BY 1",
    )
    scores = fetch(
        dsn,
        "SELECT r.benchmark, s.task, s.metric, s.filter, s.value, s.stderr, s.n FROM scores s "
        "JOIN runs r USING (run_id) WHERE r.status = 'succeeded' ORDER BY 1, 2, 3, 4",
    )
    outcomes = fetch(
        dsn,
        "SELECT r.benchmark, o.task, o.doc_id, o.doc_hash, o.metric, o.filter, o.value "
        "FROM sample_outcomes o JOIN runs r USING (run_id) WHERE r.status = 'succeeded' "
        "ORDER BY 1, 2, 3, 5, 6",
    )
    return {
        "runs": [tuple(r) for r in runs],
        "scores": [tuple(r) for r in scores],
        "outcomes": [tuple(r) for r in outcomes],
    }


@pytest.mark.timeout(2400)  # up to ten kills plus two whole campaigns, each a fresh process
@pytest.mark.parametrize("driver", ["cli", "prefect"])
def test_random_sigkills_then_resume_equal_an_uninterrupted_campaign(
    driver: str,
    prefect_server: PrefectServer,
    make_database: object,
    lab_home: Path,
    tmp_path: Path,
) -> None:
    rng = random.Random(f"kill-{driver}")
    path = campaign_yaml(tmp_path, f"killed-{driver}", BENCHMARKS)
    base_env = {
        **prefect_server.env,
        "EVALLAB_HOME": str(tmp_path / "home"),
        "TQDM_DISABLE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    reference = make_database(f"kill_ref_{driver}")  # type: ignore[operator]
    killed = make_database(f"kill_run_{driver}")  # type: ignore[operator]

    t0 = time.monotonic()
    proc = start(driver, path, {**base_env, "EVALLAB_DATABASE_URL": reference}, 0)
    assert proc.wait(timeout=600) == 0
    whole = time.monotonic() - t0
    expected = results(reference)
    assert [r[0] for r in expected["runs"]] == ["gen", "mc", "mc0"]  # type: ignore[index]

    env = {**base_env, "EVALLAB_DATABASE_URL": killed}
    moments = []
    for attempt in range(1, KILLS + 1):
        proc = start(driver, path, env, attempt)
        moment = rng.uniform(0.3, whole)
        moments.append(round(moment, 1))
        try:
            proc.wait(timeout=moment)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        deadline = time.monotonic() + 10
        while group_pids(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert group_pids(proc.pid) == [], f"processes outlived the SIGKILL at {moment:.1f} s"
    proc = start(driver, path, env, KILLS + 1)
    assert proc.wait(timeout=600) == 0, f"the final resume failed (kills at {moments})"

    assert results(killed) == expected, f"kills at {moments} s changed the results"
    # Every run key has one succeeded row; no campaign is left 'running'.
    assert all(n == 1 for *_, n in results(killed)["runs"])  # type: ignore[attr-defined]
    states = fetch(killed, "SELECT status, count(*) AS n FROM campaigns GROUP BY 1")
    by_status = {r["status"]: r["n"] for r in states}
    assert "running" not in by_status, by_status
    assert by_status.get("succeeded", 0) >= 1
