"""Hand a campaign to the campaign deployment: what ``evallab submit`` and the nightly flow call.

Apart from ``flows/campaign.py`` so that submitting imports Prefect's client only, not the flow,
its tasks and the lab's campaign engine.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from evallab.spec import load_campaign

__all__ = [
    "DEPLOYMENT",
    "REPO_ROOT",
    "campaign_choices",
    "campaign_parameters",
    "submit_campaign",
]

DEPLOYMENT = "campaign/campaign"
#: The checkout these flows run from (workers move into it: prefect.yaml's pull step).
REPO_ROOT = Path(__file__).resolve().parents[1]


def campaign_choices() -> dict[str, str]:
    """The campaigns in ``deployments/``: enum member name -> path relative to the checkout."""
    folder = REPO_ROOT / "deployments"
    files = sorted(p for p in folder.glob("*.y*ml") if p.is_file()) if folder.is_dir() else []
    return {re.sub(r"\W", "_", p.stem): f"deployments/{p.name}" for p in files} or {
        "demo": "deployments/demo.yaml"
    }


def campaign_parameters(path: Path) -> dict[str, Any]:
    """How a worker finds a campaign file: a ``deployments/`` choice, else a path."""
    resolved = path.resolve()
    try:
        rel = str(resolved.relative_to(REPO_ROOT))
    except ValueError:
        return {"campaign_path": str(resolved)}
    if rel in set(campaign_choices().values()):
        return {"campaign": rel}
    return {"campaign_path": rel}


def submit_campaign(
    path: Path, *, deployment: str = DEPLOYMENT, resume: bool = True, timeout: float | None = 0
) -> Any:
    """Validate a campaign here, then hand it to the campaign deployment; returns the flow run.

    The flow run is named after the campaign from the moment it is created.

    Args:
        path: Campaign YAML.
        deployment: ``flow-name/deployment-name``.
        resume: Passed to the flow.
        timeout: Seconds to wait for the run to finish (0: return once scheduled, None: wait).
    """
    from prefect.deployments import run_deployment

    load_campaign(path)  # fail here, not on the worker, when the file is wrong
    return run_deployment(
        name=deployment,
        parameters={**campaign_parameters(path), "resume": resume},
        flow_run_name=path.stem,
        timeout=timeout,
    )
