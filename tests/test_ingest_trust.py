"""`evallab ingest` trusts only what checksums and the data files vouch for; killed campaigns
leave nothing dangling.

One real tiny-model campaign writes a run folder; each test works on a copy of it, edited the
way a user (or a damaged disk) would, against the session's real PostgreSQL.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from evallab.campaign.leftovers import INTERRUPTED_DIR, adopt_interrupted, process_started_at
from evallab.campaign.manifest import canonical_sha256
from evallab.campaign.raw import read_run_dir
from evallab.errors import StorageError
from evallab.models import sha256_file
from evallab.paths import runs_dir
from evallab.store import Store
from evallab.store.records import CampaignRecord
from tests.helpers import REPO, campaign_yaml, fetch, run_campaign_here


@pytest.fixture(scope="module")
def finished_run(pg_dsn: str, lab_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder of one finished, stored lm-eval run (demo_mc on 3 documents)."""
    folder = tmp_path_factory.mktemp("trust")
    path = campaign_yaml(folder, "ingest-trust", "  - {name: mc, tasks: [demo_mc], limit: 3}\n")
    [run] = run_campaign_here(path, pg_dsn).runs
    assert run.status == "succeeded" and run.raw_dir is not None
    return Path(run.raw_dir)


def _copy(src: Path, dst: Path, edit: Callable[[Path], None] | None = None) -> Path:
    shutil.copytree(src, dst)
    if edit is not None:
        edit(dst)
    return dst


def _manifest(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "run.json").read_text())


def _write_manifest(folder: Path, body: dict[str, Any], *, reseal: bool) -> None:
    if reseal:  # as someone who knows the format would: every hash recomputed
        body["files"] = {rel: sha256_file(folder / rel) for rel in body["files"]}
        body["sha256"] = canonical_sha256(body)
    (folder / "run.json").write_text(json.dumps(body, indent=1))


def _refusal(folder: Path) -> str:
    with pytest.raises(StorageError) as info:
        read_run_dir(folder)
    return info.value.message


def _cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """``evallab ARGS`` in this process, through the real entry point (errors rendered)."""
    from evallab.cli.app import main

    capsys.readouterr()
    old = sys.argv
    sys.argv = ["evallab", *args]
    try:
        with pytest.raises(SystemExit) as done:
            main()
    finally:
        sys.argv = old
    out, err = capsys.readouterr()
    return int(done.value.code or 0), " ".join(out.split()), " ".join(err.split())


def test_an_edited_score_is_refused_naming_metric_and_both_values(
    finished_run: Path, tmp_path: Path
) -> None:
    stored = _manifest(finished_run)["scores"]
    acc = next(s for s in stored if s["metric"] == "acc")

    def edit(folder: Path, *, reseal: bool) -> None:
        body = _manifest(folder)
        next(s for s in body["scores"] if s["metric"] == "acc")["value"] = 0.9
        _write_manifest(folder, body, reseal=reseal)

    for reseal in (False, True):
        copy = _copy(
            finished_run, tmp_path / f"edited-{reseal}", lambda f, r=reseal: edit(f, reseal=r)
        )
        msg = _refusal(copy)
        assert f"demo_mc/acc/none: run.json says 0.9, the data files give {acc['value']}" in msg
        assert "acc_norm" not in msg  # only the edited metric is named


def test_a_flipped_byte_in_a_copied_folder_is_refused_naming_the_file_and_both_hashes(
    finished_run: Path, tmp_path: Path
) -> None:
    def flip(folder: Path) -> None:
        data = bytearray((folder / "samples.parquet").read_bytes())
        data[len(data) // 2] ^= 0x01
        (folder / "samples.parquet").write_bytes(bytes(data))

    copy = _copy(finished_run, tmp_path / "flipped", flip)
    msg = _refusal(copy)
    recorded, found = (
        sha256_file(finished_run / "samples.parquet"),
        sha256_file(copy / "samples.parquet"),
    )
    assert (
        f"samples.parquet does not match the sha256 recorded in run.json (recorded {recorded}, found {found})"
        in msg
    )
    assert str(copy) in msg  # the folder given is what was checked


def test_edited_outcomes_are_refused_even_with_every_checksum_recomputed(
    finished_run: Path, tmp_path: Path
) -> None:
    def edit(folder: Path, *, reseal: bool) -> None:
        path = folder / "outcomes.parquet"
        table = pq.read_table(path)
        rows = table.to_pylist()
        rows[0]["value"] = 1.0 - rows[0]["value"]
        pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), path)
        _write_manifest(folder, _manifest(folder), reseal=reseal)

    plain = _copy(finished_run, tmp_path / "outcomes", lambda f: edit(f, reseal=False))
    assert "outcomes.parquet does not match the sha256 recorded in run.json" in _refusal(plain)
    resealed = _copy(finished_run, tmp_path / "outcomes-resealed", lambda f: edit(f, reseal=True))
    msg = _refusal(resealed)
    assert "outcomes.parquet disagrees with the per-sample results in samples.parquet" in msg
    assert "demo_mc/acc/none doc" in msg


def test_added_missing_files_and_an_edited_run_row_are_refused(
    finished_run: Path, tmp_path: Path
) -> None:
    extra = _copy(
        finished_run, tmp_path / "extra", lambda f: (f / "more.parquet").write_bytes(b"x")
    )
    assert "more.parquet is not listed in run.json" in _refusal(extra)
    gone = _copy(finished_run, tmp_path / "gone", lambda f: (f / "results.json").unlink())
    assert "results.json is missing" in _refusal(gone)

    def rename_model(folder: Path) -> None:
        body = _manifest(folder)
        body["run"]["model_name"] = "a-better-model"
        _write_manifest(folder, body, reseal=False)

    renamed = _copy(finished_run, tmp_path / "renamed", rename_model)
    assert "run.json was edited after its run wrote it" in _refusal(renamed)


def test_cli_moved_folder_replace_corrupted_parquet_and_older_folders(
    finished_run: Path, pg_dsn: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_id = uuid.UUID(_manifest(finished_run)["run"]["run_id"])
    scores_sql = "SELECT metric, value FROM scores WHERE run_id = $1 ORDER BY metric"
    expected = [tuple(r) for r in fetch(pg_dsn, scores_sql, run_id)]
    assert expected and all(0.0 <= v <= 1.0 for _, v in expected)
    # The database lost the run (it was down when the run finished); the folder was moved.
    fetch(pg_dsn, "DELETE FROM runs WHERE run_id = $1", run_id)
    moved = _copy(finished_run, tmp_path / "elsewhere" / "the-run")
    code, out, err = _cli(["ingest", str(moved)], capsys)
    assert code == 0, err
    assert f"ingested run {run_id}" in out
    [row] = fetch(pg_dsn, "SELECT raw_path, content_sha256 FROM runs WHERE run_id = $1", run_id)
    assert row["raw_path"] == str((moved / "samples.parquet").resolve())
    assert row["content_sha256"] == _manifest(moved)["sha256"]
    assert [tuple(r) for r in fetch(pg_dsn, scores_sql, run_id)] == expected

    # The same content again changes nothing.
    code, out, err = _cli(["ingest", str(finished_run)], capsys)
    assert (code, err) == (0, "")
    assert f"already stored with the same content: run {run_id}" in out

    # Other content under the same run id (a sealed folder with another tag): refused, then
    # replaced on request.
    def retag(folder: Path) -> None:
        body = _manifest(folder)
        body["run"]["tags"] = [*body["run"]["tags"], "rerun"]
        _write_manifest(folder, body, reseal=True)

    other = _copy(finished_run, tmp_path / "other", retag)
    code, _, err = _cli(["ingest", str(other)], capsys)
    assert code == 2 and "Traceback" not in err
    assert f"run {run_id} is already stored with other content" in err and "--replace" in err
    tags_sql = "SELECT tags FROM runs WHERE run_id = $1"
    assert "rerun" not in fetch(pg_dsn, tags_sql, run_id)[0]["tags"]
    code, out, err = _cli(["ingest", "--replace", str(other)], capsys)
    assert code == 0, err
    assert f"replaced run {run_id}" in out
    assert "rerun" in fetch(pg_dsn, tags_sql, run_id)[0]["tags"]
    assert [tuple(r) for r in fetch(pg_dsn, scores_sql, run_id)] == expected

    # A folder written before per-file manifests still ingests, with a warning...
    def older(folder: Path) -> None:
        body = _manifest(folder)
        for key in ("format", "files", "sha256"):
            body.pop(key)
        (folder / "run.json").write_text(json.dumps(body))

    old = _copy(finished_run, tmp_path / "older", older)
    code, out, err = _cli(["ingest", "--replace", str(old)], capsys)
    assert code == 0, err
    assert "warning: run folder" in out and "earlier version of the lab" in out

    # ...and a damaged Parquet file in it is one paragraph, exit 2, no traceback.
    (old / "outcomes.parquet").write_bytes(b"PAR1 damaged")
    code, out, err = _cli(["ingest", str(old)], capsys)
    assert code == 2
    assert err.startswith("error: outcomes.parquet of the run folder can't be read as Parquet")
    assert str(old / "outcomes.parquet") in err and "restore the run folder" in err
    assert "Traceback" not in err + out

    # An edited score through the CLI: refused, and `results` still shows the derived value.
    edited = _copy(finished_run, tmp_path / "edited")
    body = _manifest(edited)
    body["scores"][0]["value"] = 0.9
    _write_manifest(edited, body, reseal=False)
    code, _, err = _cli(["ingest", "--replace", str(edited)], capsys)
    assert code == 2 and "run.json says 0.9" in err and "Traceback" not in err
    assert [tuple(r) for r in fetch(pg_dsn, scores_sql, run_id)] == expected


_CHILD = """
import sys, time
from pathlib import Path
from evallab.campaign.leftovers import write_attempt
folder = Path(sys.argv[1])
write_attempt(folder, sys.argv[2], folder.name)
(folder / "samples.parquet.tmp").write_bytes(b"half a table")
print("evaluating", flush=True)
time.sleep(600)
"""


def _campaign(
    store: Store,
    name: str,
    host: str,
    pid: int,
    started: datetime | None,
    campaign_id: uuid.UUID | None = None,
) -> uuid.UUID:
    rec = CampaignRecord(
        campaign_id=campaign_id or uuid.uuid4(),
        name=name,
        spec={},
        spec_sha256="x",
        spec_path="p",
        lab_version="0.1.0",
        lab_commit="c",
        started_at=datetime.now(UTC),
        driver="cli",
        driver_host=host,
        driver_pid=pid,
        driver_started_at=started,
    )
    store.open_campaign(rec)
    return rec.campaign_id


def test_a_killed_campaign_is_closed_and_its_partial_folder_moved_aside(
    finished_run: Path, pg_dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    host = socket.gethostname()
    partial = runs_dir() / str(uuid.uuid4())
    killed_id = uuid.uuid4()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO)])}
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(partial), str(killed_id)],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "evaluating"
        with Store(pg_dsn) as store:
            _campaign(
                store, "killed-driver", host, child.pid, process_started_at(child.pid), killed_id
            )
            # This very process, alive; a row whose pid was since reused by it; another host.
            me = os.getpid()
            alive = _campaign(store, "alive-driver", host, me, process_started_at(me))
            reused = _campaign(store, "reused-pid", host, me, datetime.now(UTC) - timedelta(days=3))
            remote = _campaign(store, "remote-driver", "another-host", 1, None)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL
    assert (partial / "attempt.json").is_file()  # what a kill leaves behind

    code, out, err = _cli(["db", "status"], capsys)
    assert code == 0, err
    status_sql = "SELECT status, status_reason FROM campaigns WHERE campaign_id = $1"
    [killed] = fetch(pg_dsn, status_sql, killed_id)
    assert killed["status"] == "crashed"
    assert f"pid {child.pid} on {host}" in killed["status_reason"]
    assert "killed" in killed["status_reason"] and "no longer exists" in killed["status_reason"]
    [row] = fetch(pg_dsn, status_sql, reused)
    assert row["status"] == "crashed" and "now belongs to another process" in row["status_reason"]
    assert fetch(pg_dsn, status_sql, alive)[0]["status"] == "running"
    assert fetch(pg_dsn, status_sql, remote)[0]["status"] == "running"
    assert f"campaign killed-driver ({killed_id}) marked crashed" in out

    # The partial folder is gone from runs/ (moved aside); the finished one stays for --resume.
    aside = runs_dir() / INTERRUPTED_DIR / partial.name
    assert not partial.exists() and (aside / "samples.parquet.tmp").is_file()
    assert f"run {partial.name} of campaign {killed_id} never finished" in out
    assert (finished_run / "run.json").is_file()
    # The next attempt at that run takes its folder back (its caches save work).
    assert adopt_interrupted(partial) and (partial / "attempt.json").is_file()
    assert not aside.exists()  # (other runs of the session's lab home may be aside too)
    shutil.rmtree(partial)
