"""The nightly flow: submit every campaign in ``deployments/`` to the campaign deployment.

Each campaign becomes its own flow run on the ``gpu`` pool (one at a time per GPU); this flow only
validates the files and schedules them, so it runs on the ``lab`` pool and finishes in seconds.
Runs that already succeeded with the same pins are skipped by the campaign flow (resume), so a
night with no new model, runtime or task version costs nothing.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger, task

from evallab.spec import load_campaign
from flows.submit import DEPLOYMENT, submit_campaign

__all__ = ["campaign_files", "nightly"]


def campaign_files(folder: Path) -> list[Path]:
    """The campaign YAML files directly inside ``folder``, sorted by name."""
    return sorted(p for p in folder.glob("*.y*ml") if p.is_file())


@task(name="validate-campaign", retries=0)
def validate_task(path: Path) -> str:
    """Load and validate one campaign file; returns its campaign name."""
    spec, _ = load_campaign(path)
    return spec.name


@task(name="submit-campaign", retries=2, retry_delay_seconds=10)
def submit_task(path: Path, deployment: str) -> str:
    """Schedule one campaign run on the campaign deployment; returns the flow run id."""
    run = submit_campaign(path, deployment=deployment, timeout=0)
    return str(run.id)


@flow(name="nightly", log_prints=True)
def nightly(folder: str = "deployments", deployment: str = DEPLOYMENT) -> dict[str, str]:
    """Validate every campaign in ``folder`` and submit each one; returns name -> flow run id."""
    logger = get_run_logger()
    files = campaign_files(Path(folder))
    names = {path: validate_task(path) for path in files}  # all valid before any is submitted
    submitted = {names[path]: submit_task(path, deployment) for path in files}
    for name, run_id in submitted.items():
        logger.info("submitted campaign %s as flow run %s", name, run_id)
    return submitted
