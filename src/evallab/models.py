"""Resolve a campaign's model entry to a folder on disk, pinned by revision and content hash."""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from evallab.errors import ModelError, PinError
from evallab.hub import HubClient, bound_hub_library_timeouts, cached_ref, call_hub, hub_offline
from evallab.locks import file_lock
from evallab.paths import lab_home
from evallab.spec import HubModelSpec, LocalModelSpec, ModelSpec, PackageModelSpec, TinyModelSpec
from evallab.spec.base import FULL_SHA

__all__ = [
    "ModelArtifact",
    "cached_snapshot",
    "checked_gguf_sha256",
    "folder_sha256",
    "gguf_parts",
    "hub_snapshot",
    "resolve_model",
    "sha256_file",
]

_CHUNK = 1 << 20
# A split GGUF's parts: ``name-00001-of-00003.gguf`` .. ``name-00003-of-00003.gguf``.
_SPLIT_GGUF = re.compile(r"^(?P<stem>.+)-(?P<part>\d{5})-of-(?P<total>\d{5})\.gguf$")
# Beside the GGUF file, what a repository holds for the tokenizer and chat template, the config
# and the card: small files, fetched so a GGUF repo's other quants are never downloaded.
_GGUF_COMPANIONS = ("*.json", "*.model", "*.txt", "*.md", "*.jinja", "LICENSE*")


def sha256_file(path: Path) -> str:
    """sha256 of a file's bytes."""
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def folder_sha256(folder: Path, patterns: Sequence[str] | None = None) -> str:
    """sha256 over every file's relative path and content hash, in sorted order.

    Hidden files and ``*.lock`` files are skipped so caches next to the weights don't change it;
    with ``patterns``, only files whose relative path matches one of them count.
    """
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder).as_posix()
        if not p.is_file() or any(part.startswith(".") for part in Path(rel).parts):
            continue
        if rel.endswith(".lock"):
            continue
        if patterns is not None and not any(fnmatch.fnmatch(rel, pat) for pat in patterns):
            continue
        h.update(rel.encode() + b"\0" + sha256_file(p).encode() + b"\n")
    return h.hexdigest()


@dataclass(frozen=True)
class ModelArtifact:
    """A model ready to serve: where it is and exactly what it is."""

    name: str
    source: str
    model_id: str
    revision: str
    sha256: str
    path: Path
    quant: str
    chat: bool
    pinned: bool = True
    gguf_path: Path | None = None
    weights_sha256: str = ""
    provenance: tuple[tuple[str, str], ...] = ()
    """How the served weights were made, when the lab made them (e.g. a GGUF conversion:
    exporter and quantizer versions), as ordered pairs recorded with every run."""


def checked_gguf_sha256(name: str, path: Path, expected: str | None) -> str:
    """The sha256 of the GGUF file ``path``, checked against the campaign's pin if it has one.

    Raises:
        PinError: the file's content isn't the pinned one.
    """
    digest = sha256_file(path)
    if expected is not None and digest != expected:
        raise PinError(
            f"the GGUF file of model {name!r} doesn't match its pinned sha256: it has sha256 "
            f"{digest}, not the pinned {expected}",
            value=path,
            fix="restore the pinned file, or pin the new one deliberately (gguf_sha256 / sha256)",
        )
    return digest


def _tiny(spec: TinyModelSpec, base_dir: Path) -> ModelArtifact:
    key = f"tiny-s{spec.seed}-l{spec.layers}-h{spec.hidden}"
    if spec.finetune_task:
        key += f"-ft-{spec.finetune_task}-{spec.finetune_steps}"
    folder = lab_home() / "models" / key
    if not (folder / "config.json").exists():
        # Two campaigns on this host (two Prefect flow runs, two `evallab run`) may fetch the
        # same tiny model at once: one builds it, the other waits and uses it.
        with build_lock(folder):
            if not (folder / "config.json").exists():
                _build_tiny(spec, folder, base_dir)
    digest = folder_sha256(folder)
    return ModelArtifact(
        name=spec.name,
        source="tiny",
        model_id=f"evallab/{key}",
        revision=f"local:{digest[:12]}",
        sha256=digest,
        path=folder,
        quant=spec.quant,
        chat=spec.chat,
        weights_sha256=_weights_sha(folder),
    )


def _build_tiny(spec: TinyModelSpec, folder: Path, base_dir: Path) -> None:
    from evallab.tiny_model import build_tiny_model

    if spec.finetune_task:
        from evallab.finetune import finetune_tiny

        base = folder.with_name(f"tiny-s{spec.seed}-l{spec.layers}-h{spec.hidden}")
        with build_lock(base):
            if not (base / "config.json").exists():
                build_tiny_model(base, seed=spec.seed, layers=spec.layers, hidden=spec.hidden)
        finetune_tiny(base, folder, spec.finetune_task, spec.finetune_steps, base_dir)
    else:
        build_tiny_model(folder, seed=spec.seed, layers=spec.layers, hidden=spec.hidden)


def build_lock(folder: Path) -> contextlib.AbstractContextManager[None]:
    """Hold this host's lock on building the models folder ``folder`` (waits for it)."""
    return file_lock(folder.parent / f".{folder.name}.lock")


def _weights_sha(folder: Path) -> str:
    weights = sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.gguf"))
    if not weights:
        return ""
    if len(weights) == 1:
        return sha256_file(weights[0])
    h = hashlib.sha256()
    for w in weights:
        h.update(w.name.encode() + b"\0" + sha256_file(w).encode() + b"\n")
    return h.hexdigest()


def _gguf_sha(spec: ModelSpec, gguf: Path | None) -> str:
    """sha256 of the model's GGUF file (if it has one), checked against ``gguf_sha256``."""
    if gguf is None or not gguf.is_file():
        return ""
    return checked_gguf_sha256(spec.name, gguf, spec.gguf_sha256)


def _local(spec: LocalModelSpec, base_dir: Path) -> ModelArtifact:
    folder = spec.path if spec.path.is_absolute() else (base_dir / spec.path)
    folder = folder.resolve()
    if not folder.is_dir():
        raise ModelError(
            f"model folder for {spec.name!r} does not exist",
            value=folder,
            fix="check 'path' in the campaign file (relative paths resolve against the "
            f"repository root {base_dir})",
        )
    gguf = None
    if spec.gguf_file:
        gguf = folder / spec.gguf_file
        if not gguf.is_file():
            raise ModelError(
                f"GGUF file for {spec.name!r} not found", value=gguf, fix="check 'gguf_file'"
            )
    elif not (folder / "config.json").exists() and not list(folder.glob("*.gguf")):
        raise ModelError(
            f"model folder for {spec.name!r} holds neither config.json nor a .gguf file",
            value=folder,
            fix="point 'path' at a Hugging Face model folder (config.json + weights)",
        )
    digest = folder_sha256(folder)
    return ModelArtifact(
        name=spec.name,
        source="local",
        model_id=str(folder),
        revision=f"local:{digest[:12]}",
        sha256=digest,
        path=folder,
        quant=spec.quant,
        chat=spec.chat,
        gguf_path=gguf,
        weights_sha256=_gguf_sha(spec, gguf) or _weights_sha(folder),
    )


def gguf_parts(gguf_file: str) -> list[str]:
    """Every file of a GGUF: itself, or all parts of a split GGUF named by its first part."""
    m = _SPLIT_GGUF.match(gguf_file)
    if not m:
        return [gguf_file]
    total = int(m["total"])
    return [f"{m['stem']}-{i:05d}-of-{m['total']}.gguf" for i in range(1, total + 1)]


def _hub_patterns(spec: HubModelSpec) -> list[str] | None:
    """Files to fetch from the hub: everything, or for a GGUF model its parts + small files."""
    if not spec.gguf_file:
        return None
    return [*gguf_parts(spec.gguf_file), *_GGUF_COMPANIONS]


def _cached_snapshot(repo: str, sha: str) -> Path | None:
    """The complete cached snapshot of ``repo`` at commit ``sha``, None if the cache lacks it.

    A commit's files never change, so a complete snapshot needs no network at all.
    """
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo, revision=sha, local_files_only=True))
    except LocalEntryNotFoundError:
        return None


def cached_snapshot(repo: str, revision: str) -> Path | None:
    """The cached snapshot of ``repo`` at ``revision``, None if the local cache lacks it.

    ``revision`` is a commit, or a branch/tag whose ref the cache recorded. Never touches the
    network.
    """
    sha = revision if FULL_SHA.match(revision) else cached_ref("model", repo, revision)
    return _cached_snapshot(repo, sha) if sha else None


def _hub(spec: HubModelSpec, allow_unpinned: bool) -> ModelArtifact:
    folder, revision = hub_snapshot(spec, allow_unpinned)
    gguf = folder / spec.gguf_file if spec.gguf_file else None
    return ModelArtifact(
        name=spec.name,
        source="hf",
        model_id=spec.repo,
        revision=revision,
        sha256=folder_sha256(folder, _hub_patterns(spec)),
        path=folder,
        quant=spec.quant,
        chat=spec.chat,
        pinned=spec.is_pinned,
        gguf_path=gguf,
        weights_sha256=_gguf_sha(spec, gguf) or _weights_sha(folder),
    )


def hub_snapshot(spec: HubModelSpec, allow_unpinned: bool) -> tuple[Path, str]:
    """The local snapshot of a hub model at its revision, downloaded unless already cached.

    Returns:
        The snapshot folder and the commit sha it holds.

    Raises:
        HubUnreachableError: the hub can't be reached or stays busy.
        ModelError: unknown repository or revision, gated without a token, offline cache miss.
        PinError: the revision is a branch/tag and unpinned models aren't allowed.
    """
    from huggingface_hub import snapshot_download

    hub = HubClient()
    offline = hub_offline()
    revision = spec.revision
    pinned = spec.is_pinned
    asked = False
    if not pinned:
        if offline:
            sha = cached_ref("model", spec.repo, spec.revision)
        else:
            sha, asked = hub.repo_info("model", spec.repo, spec.revision).sha, True
        if sha and not allow_unpinned:
            raise PinError(
                f"model {spec.name!r} uses revision {spec.revision!r}, not a commit sha",
                value=f"{spec.repo}@{spec.revision} (currently {sha})",
                fix=f"set revision: {sha} in the campaign, or allow_unpinned: true",
            )
        # Offline without a cached ref, the download below says what is missing.
        revision = sha or revision
    # A commit (pinned, or the branch just resolved) may already be complete in the cache.
    is_commit = pinned or revision != spec.revision
    folder = _cached_snapshot(spec.repo, revision) if is_commit else None
    patterns = _hub_patterns(spec)
    # Another quant of the same repository and commit may be all the cache holds.
    if (
        folder is not None
        and spec.gguf_file
        and not all((folder / part).is_file() for part in gguf_parts(spec.gguf_file))
    ):
        folder = None
    if folder is None:
        if not offline and not asked:
            # Asking the API first makes an unreachable hub, an unknown repository or revision
            # and a gated model fail within seconds, each with its own message, before any
            # download starts.
            hub.repo_info("model", spec.repo, revision, doing="download")
        bound_hub_library_timeouts()
        folder = call_hub(
            lambda: Path(
                snapshot_download(
                    spec.repo,
                    revision=revision,
                    token=hub.token,
                    endpoint=hub.endpoint,
                    local_files_only=offline,
                    allow_patterns=patterns,
                )
            ),
            endpoint=hub.endpoint,
            doing="download",
            repo=spec.repo,
            revision=revision,
        )
    return folder, revision


def resolve_model(
    spec: ModelSpec, base_dir: Path, *, allow_unpinned: bool = False
) -> ModelArtifact:
    """Fetch or build a campaign's model and pin it.

    Args:
        spec: The campaign's model entry.
        base_dir: Folder relative paths resolve against.
        allow_unpinned: Accept hub revisions that are branches/tags (resolved to a sha).

    Raises:
        HubUnreachableError: the hub can't be reached or stays busy (after a few seconds of
            retries; ``transient``, so the campaign may retry the step later).
        ModelError: the model can't be found, built or fetched; for the hub: unknown repository
            or revision, gated model without a token, offline and not in the local cache.
        PinError: a hub revision isn't a full sha and unpinned models aren't allowed; a GGUF
            file or package doesn't match its pinned sha256 or version.
    """
    if isinstance(spec, TinyModelSpec):
        return _tiny(spec, base_dir)
    if isinstance(spec, LocalModelSpec):
        return _local(spec, base_dir)
    if isinstance(spec, PackageModelSpec):
        from evallab.quant.package import resolve_package_model

        return resolve_package_model(spec)
    return _hub(spec, allow_unpinned)
