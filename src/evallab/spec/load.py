"""Reading a campaign file: validation with readable errors, base folders, spec hashes."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from evallab.errors import SpecError
from evallab.spec.campaign import CampaignSpec

__all__ = ["campaign_base_dir", "load_campaign", "spec_sha256"]


def _format_validation(path: Path, exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key (check its spelling against docs/campaign-format.md)"
        lines.append(f"{loc or '<top>'}: {msg}")
    return "; ".join(lines)


def load_campaign(path: str | Path) -> tuple[CampaignSpec, Path]:
    """Load and validate a campaign file.

    Relative paths inside the file (local model folders, data files, ``tasks_dir``) resolve
    against the file's folder's repository root — the nearest parent holding ``tasks_custom`` or
    ``pyproject.toml`` — falling back to the file's own folder.

    Args:
        path: The campaign YAML.

    Returns:
        The validated spec and the base folder relative paths resolve against.

    Raises:
        SpecError: the file is missing, not YAML, or not a valid campaign.
    """
    p = Path(path)
    if not p.is_file():
        raise SpecError(
            "campaign file not found", value=p, fix="pass the path of an existing campaign YAML"
        )
    try:
        raw = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise SpecError(
            f"campaign file is not valid YAML{where}",
            value=p,
            fix="fix the YAML syntax (indentation, colons, quotes)",
        ) from exc
    if not isinstance(raw, dict):
        raise SpecError(
            "campaign file must hold a mapping at its top level",
            value=p,
            fix="start the file with 'name:', 'models:' and 'benchmarks:' keys",
        )
    try:
        spec = CampaignSpec.model_validate(raw)
    except ValidationError as exc:
        raise SpecError(
            f"campaign file is invalid: {_format_validation(p, exc)}",
            value=p,
            fix="correct the listed fields (see docs/campaign-format.md for every key)",
        ) from exc
    return spec, campaign_base_dir(p)


def campaign_base_dir(path: Path) -> Path:
    """The folder relative paths in a campaign file resolve against."""
    here = path.resolve().parent
    for folder in (here, *here.parents):
        if (folder / "pyproject.toml").exists() or (folder / "tasks_custom").is_dir():
            return folder
    return here


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def spec_sha256(spec: BaseModel) -> str:
    """sha256 of a spec's canonical JSON (keys sorted), for identities and provenance."""
    return hashlib.sha256(_canonical(spec.model_dump(mode="json")).encode()).hexdigest()
