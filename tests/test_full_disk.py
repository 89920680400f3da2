"""A disk that fills up mid-campaign: a clear error, finished runs kept, nothing half-written.

The runs folder is a real, small tmpfs; after the first run finishes the test fills it, so the
second run meets a genuinely full disk (ENOSPC), not a simulated one.
"""

from __future__ import annotations

import errno
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from evallab.campaign import RunOutcome
from evallab.diskfull import is_disk_full
from evallab.errors import HarnessError, StorageError
from tests.helpers import REPO, evallab, fetch, run_campaign_here


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 64 MiB tmpfs; skipped where this process may not mount one."""
    mount = tmp_path / "small-disk"
    mount.mkdir()
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(folder: Path) -> Path:
    """Write zeros into ``folder`` until the filesystem is full; return the filler file."""
    filler = folder / "filler"
    with filler.open("wb", buffering=0) as f:  # unbuffered: close() has nothing left to flush
        for chunk in (b"\0" * 65536, b"\0" * 512):
            try:
                while f.write(chunk):
                    pass
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
    return filler


class FillAfterFirstRun:
    """A reporter that fills the disk as soon as the first run has finished."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.filler: Path | None = None
        self.finished: list[RunOutcome] = []

    def run_started(self, label: str, index: int, total: int) -> None:
        pass

    def run_finished(self, outcome: RunOutcome) -> None:
        self.finished.append(outcome)
        if self.filler is None:
            self.filler = fill(self.folder)

    def message(self, text: str) -> None:
        pass


def test_full_disk_fails_clearly_keeps_finished_runs_and_resumes(
    pg_dsn: str, lab_home: Path, small_disk: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runs = small_disk / "runs"
    monkeypatch.setenv("EVALLAB_RUNS_DIR", str(runs))
    path = tmp_path / "fulldisk.yaml"
    path.write_text(
        f"name: fulldisk\ntasks_dir: {REPO / 'tasks_custom'}\nseed: 3\n"
        "models:\n  - {name: tiny-base, source: tiny, seed: 0}\n"
        "benchmarks:\n"
        "  - {name: first, tasks: [demo_mc], limit: 5}\n"
        "  - {name: second, tasks: [demo_gen], limit: 5}\n"
    )
    reporter = FillAfterFirstRun(small_disk)
    with pytest.raises(StorageError) as exc:
        run_campaign_here(path, pg_dsn, reporter=reporter)
    message = exc.value.message
    assert "disk holding the runs folder is full (0 B free of" in message
    assert "tiny-base · transformers · second was discarded" in message
    assert exc.value.value == runs
    assert "EVALLAB_RUNS_DIR" in exc.value.fix and "--resume" in exc.value.fix

    stored = fetch(
        pg_dsn,
        "SELECT r.run_id, r.benchmark, r.status, r.raw_path FROM runs r "
        "JOIN campaigns c USING (campaign_id) WHERE c.name = 'fulldisk'",
    )
    assert [(r["benchmark"], r["status"]) for r in stored] == [("first", "succeeded")]
    assert Path(stored[0]["raw_path"]).is_file()
    # Nothing of the run that met the full disk is left behind.
    run_dirs = sorted(p.name for p in runs.iterdir() if p.name != "_runtimes")
    assert run_dirs == [str(stored[0]["run_id"])]
    [campaign] = fetch(pg_dsn, "SELECT status FROM campaigns WHERE name = 'fulldisk'")
    assert campaign["status"] == "failed"

    assert reporter.filler is not None
    reporter.filler.unlink()
    resumed = run_campaign_here(path, pg_dsn, resume=True)
    assert [(o.benchmark, o.status, o.skipped) for o in resumed.runs] == [
        ("first", "succeeded", True),
        ("second", "succeeded", False),
    ]
    done = fetch(
        pg_dsn,
        "SELECT r.benchmark FROM runs r JOIN campaigns c USING (campaign_id) "
        "WHERE c.name = 'fulldisk' AND r.status = 'succeeded' ORDER BY 1",
    )
    assert [r["benchmark"] for r in done] == ["first", "second"]


def test_full_disk_through_the_cli_is_one_paragraph(
    pg_dsn: str, lab_home: Path, small_disk: Path, tmp_path: Path
) -> None:
    filler = fill(small_disk)
    path = tmp_path / "fulldisk-cli.yaml"
    path.write_text(
        f"name: fulldisk-cli\ntasks_dir: {REPO / 'tasks_custom'}\n"
        "models:\n  - {name: tiny-base, source: tiny, seed: 0}\n"
        "benchmarks:\n  - {name: only, tasks: [demo_mc], limit: 3}\n"
    )
    proc = evallab(
        ["run", str(path)], cwd=tmp_path, env={"EVALLAB_RUNS_DIR": str(small_disk / "runs")}
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    message = " ".join(proc.stderr.split())
    assert "disk holding the runs folder is full" in message and "--resume" in message
    assert "Traceback" not in proc.stderr
    assert (
        fetch(
            pg_dsn,
            "SELECT r.status FROM runs r JOIN campaigns c USING (campaign_id) "
            "WHERE c.name = 'fulldisk-cli'",
        )
        == []
    )
    [campaign] = fetch(pg_dsn, "SELECT status FROM campaigns WHERE name = 'fulldisk-cli'")
    assert campaign["status"] == "failed"
    filler.unlink()


def test_full_disk_is_recognised_behind_library_wrappers() -> None:
    import shutil
    import sqlite3

    enospc = OSError(errno.ENOSPC, "No space left on device")
    wrapped = HarnessError("lm-eval failed")
    wrapped.__cause__ = enospc
    assert is_disk_full(enospc) and is_disk_full(wrapped)
    assert is_disk_full(sqlite3.OperationalError("database or disk is full"))
    assert is_disk_full(shutil.Error([("a", "b", "[Errno 28] No space left on device: 'a'")]))
    assert is_disk_full(OSError(errno.EDQUOT, "Disk quota exceeded"))
    assert not is_disk_full(OSError(errno.EACCES, "Permission denied"))
    assert not is_disk_full(HarnessError("unknown task demo_mcq"))
