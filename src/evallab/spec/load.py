"""Reading a campaign file: validation with readable errors, base folders, spec hashes."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from evallab.errors import ConfigError, SpecError
from evallab.spec.campaign import CampaignSpec

__all__ = [
    "DEFAULT_MAX_CAMPAIGN_BYTES",
    "campaign_base_dir",
    "load_campaign",
    "max_campaign_bytes",
    "require_pinned",
    "spec_sha256",
]

#: Largest campaign file read by default. Real campaigns are a few kilobytes; a file of many
#: megabytes is a mistake (a data file passed by accident) that YAML parsing would spend minutes
#: and hundreds of megabytes on.
DEFAULT_MAX_CAMPAIGN_BYTES = 1024 * 1024
_MAX_ENV = "EVALLAB_MAX_CAMPAIGN_BYTES"


def max_campaign_bytes() -> int:
    """The size limit of campaign files: ``$EVALLAB_MAX_CAMPAIGN_BYTES`` or 1 MiB.

    Raises:
        ConfigError: the variable is set to something other than a positive integer.
    """
    raw = os.environ.get(_MAX_ENV, "").strip()
    if not raw:
        return DEFAULT_MAX_CAMPAIGN_BYTES
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value <= 0:
        raise ConfigError(
            f"{_MAX_ENV} must be a positive number of bytes",
            value=raw,
            fix=f"set {_MAX_ENV} to e.g. 4194304 (4 MiB), or unset it for the 1 MiB default",
        )
    return value


def _read_text(p: Path) -> str:
    """The file's text, refused before reading when it is over the size limit."""
    limit = max_campaign_bytes()
    try:
        size = p.stat().st_size
        if size > limit:
            raise SpecError(
                f"campaign file is {size:,} bytes, over the limit of {limit:,} bytes (campaign "
                "files are a few kilobytes; this looks like another file)",
                value=p,
                fix=f"pass the campaign YAML, or raise the limit with {_MAX_ENV}=<bytes>",
            )
        with p.open("rb") as f:
            # Read one byte past the limit: a file that grows after stat() is still refused.
            data = f.read(limit + 1)
    except OSError as exc:
        raise SpecError(
            f"campaign file can't be read ({exc.strerror or exc})",
            value=p,
            fix="check the path and its permissions",
        ) from exc
    if len(data) > limit:
        raise SpecError(
            f"campaign file is over the limit of {limit:,} bytes",
            value=p,
            fix=f"pass the campaign YAML, or raise the limit with {_MAX_ENV}=<bytes>",
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError(
            f"campaign file is not UTF-8 text (byte {exc.start} can't be decoded)",
            value=p,
            fix="save the campaign as UTF-8 YAML",
        ) from exc


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
        SpecError: the file is missing, over the size limit (:func:`max_campaign_bytes`, checked
            before parsing), not UTF-8 YAML, or not a valid campaign.
    """
    p = Path(path)
    try:
        is_file = p.is_file()
    except (OSError, ValueError):  # a NUL byte, a name too long for the filesystem
        is_file = False
    if not is_file:
        raise SpecError(
            "campaign file not found", value=p, fix="pass the path of an existing campaign YAML"
        )
    text = _read_text(p)
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise SpecError(
            f"campaign file is not valid YAML{where}",
            value=p,
            fix="fix the YAML syntax (indentation, colons, quotes)",
        ) from exc
    except RecursionError as exc:
        raise SpecError(
            "campaign file nests lists or mappings too deeply to read",
            value=p,
            fix="a campaign is a few levels deep: check the file is the campaign YAML",
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


def require_pinned(spec: CampaignSpec, path: Path) -> None:
    """Refuse hub models at a branch or tag before anything runs, unless ``allow_unpinned``.

    Checked without the network, so an offline machine gets the answer at once instead of a
    hub look-up that can only fail.

    Raises:
        SpecError: a hub model's revision is not a full commit sha.
    """
    floating = [] if spec.allow_unpinned else spec.floating_models()
    if not floating:
        return
    first = floating[0]
    listed = ", ".join(f"{m.name} ({m.repo}@{m.revision})" for m in floating)
    raise SpecError(
        f"hub model revision {first.revision!r} is not a commit sha: a revision must be the full "
        "40-character hex commit sha, so that every run evaluates the same weights",
        value=listed,
        fix=f"set revision: to the commit sha (`evallab pins check {path}` shows the commit "
        f"{first.revision!r} points at now; or see https://huggingface.co/{first.repo}/commits/"
        f"{first.revision}), or set allow_unpinned: true to run it tagged unpinned",
    )


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
