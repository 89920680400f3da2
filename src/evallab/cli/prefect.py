"""Orchestration: ``evallab prefect setup|bootstrap-blocks``, ``submit``, ``webhook serve``.

Prefect code lives in the repository's ``flows/`` and ``blocks/`` packages (next to
``prefect.yaml``), not in the library; these commands import them from the lab's checkout, so
``evallab run`` and the rest of the CLI work on a machine without Prefect.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import logging
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Annotated, Any

import typer
from rich.table import Table

from evallab.cli.console import console
from evallab.errors import LabError, OrchestrationError
from evallab.paths import source_checkout

__all__ = ["app", "prefect_app", "webhook_app"]

app = typer.Typer(help="Prefect orchestration.")
prefect_app = typer.Typer(help="Set up the lab's Prefect work pools, blocks and deployments.")
webhook_app = typer.Typer(help="Receive Hugging Face webhooks and announce new model commits.")

#: The checkout's top-level packages that hold the Prefect code.
_CHECKOUT_PACKAGES = ("flows", "blocks")


def _checkout() -> Path:
    """The checkout holding the lab's ``flows/``, ``blocks/`` and ``prefect.yaml``.

    The one an editable install runs from; else (a wheel install) the working directory or its
    nearest parent holding them.

    Raises:
        OrchestrationError: no such checkout.
    """
    own = source_checkout()
    here = Path.cwd()
    for folder in (*([own] if own else []), here, *here.parents):
        if (folder / "flows" / "__init__.py").is_file() and (folder / "prefect.yaml").is_file():
            return folder
    raise OrchestrationError(
        "the lab's flows/ folder is missing (orchestration needs a source checkout)",
        value=here,
        fix="run from the lab's checkout (it holds flows/, blocks/ and prefect.yaml)",
    )


def _orchestration(module: str) -> ModuleType:
    """Import a module of the repository's ``flows/`` or ``blocks/`` packages.

    Where they are importable already (a Prefect worker, pytest, ``python -m`` from the
    checkout), they are used as they are; otherwise the two packages are loaded from the checkout
    the lab is installed from. The repository root does not go on ``sys.path``: that would also
    make its ``tests``, ``bench`` and ``scripts`` folders importable, shadowing installed modules
    of those names.

    Raises:
        OrchestrationError: Prefect is not installed, or there is no checkout with those packages.
    """
    if importlib.util.find_spec("prefect") is None:
        raise OrchestrationError(
            "Prefect is not installed in this environment",
            value=sys.executable,
            fix="pip install 'evallab[orchestration]', or use `evallab run` (it needs no Prefect)",
        )
    for package in _CHECKOUT_PACKAGES:
        if package not in sys.modules and importlib.util.find_spec(package) is None:
            _load_from_checkout(package)
    return importlib.import_module(module)


def _load_from_checkout(package: str) -> None:
    """Import the checkout's ``package`` (``flows`` or ``blocks``) under its own name."""
    root = _checkout()
    spec = importlib.machinery.PathFinder.find_spec(package, [str(root)])
    if spec is None or spec.loader is None or not spec.submodule_search_locations:
        raise OrchestrationError(
            f"the lab's {package}/ folder is missing (orchestration needs a source checkout)",
            value=root,
            fix="install evallab editable from its repository (pip install -e .)",
        )
    module = importlib.util.module_from_spec(spec)
    # Registered before it runs, as the import system does: blocks/__init__.py imports
    # blocks.lab, which finds its parent package here.
    sys.modules[package] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[package]
        raise


def _deploy(names: list[str]) -> None:
    checkout = _checkout()
    env = {**os.environ, "EVALLAB_REPO": str(checkout)}
    args = ["--all"] if not names else [a for n in names for a in ("--name", n)]
    cmd = [sys.executable, "-m", "prefect", "--no-prompt", "deploy", *args]
    proc = subprocess.run(cmd, cwd=checkout, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise OrchestrationError(
            f"`prefect deploy` failed: {(proc.stderr or proc.stdout).strip()[-1500:]}",
            value=" ".join(cmd[2:]),
            fix="check that PREFECT_API_URL names a running Prefect server; check prefect.yaml",
        )


@prefect_app.command("setup")
def setup(
    pool: Annotated[str, typer.Option(help="The GPU work pool (process type).")] = "gpu",
    gpus: Annotated[
        int, typer.Option(min=1, help="GPUs on this host: one concurrency limit (slot) each.")
    ] = 1,
    lab_pool: Annotated[
        str, typer.Option(help="Pool for light flows (nightly submit, release watch).")
    ] = "lab",
    blocks: Annotated[bool, typer.Option(help="Also create/update the blocks.")] = True,
    deploy: Annotated[
        bool, typer.Option(help="Also run `prefect deploy` for prefect.yaml.")
    ] = True,
) -> None:
    """Create or update the work pools, the GPU concurrency limits, blocks and deployments.

    Each GPU of this host gets a global concurrency limit with one slot; a campaign holds it only
    while it starts a runtime, runs the canary and evaluates. The pools have no limit, so queued
    campaigns check pins and fetch models while they wait for the GPU. Safe to run again.
    """
    bootstrap = _orchestration("blocks.bootstrap")
    table = Table(title="Prefect setup")
    table.add_column("object")
    table.add_column("action")
    table.add_column("detail")
    gpu_limit_name = _orchestration("flows.executor").gpu_limit_name
    action = bootstrap.ensure_work_pool(pool, None)
    table.add_row(f"work pool {pool}", action, "process, no limit (the GPU limits below guard)")
    for index in range(gpus):
        name = gpu_limit_name(devices=str(index))
        action = bootstrap.ensure_gpu_limit(name)
        table.add_row(f"concurrency limit {name}", action, f"1 slot: one campaign on GPU {index}")
    action = bootstrap.ensure_work_pool(lab_pool, None)
    table.add_row(f"work pool {lab_pool}", action, "process, no limit")
    if blocks:
        for change in bootstrap.bootstrap_blocks():
            table.add_row(change.block, change.action, change.detail)
    if deploy:
        _deploy([])
        table.add_row("deployments", "deployed", str(_checkout() / "prefect.yaml"))
    console.print(table)
    console.print(
        "Start one worker per GPU (or per set of GPUs a model needs; a campaign holds the limit "
        "of every GPU it sees): CUDA_DEVICE_ORDER=PCI_BUS_ID CUDA_VISIBLE_DEVICES=0 prefect "
        f"worker start --pool {pool} (see docs/orchestration.md)"
    )


@prefect_app.command("bootstrap-blocks")
def bootstrap_blocks() -> None:
    """Create or update the results-database, HF-token and runtime-profile blocks from the env."""
    bootstrap = _orchestration("blocks.bootstrap")
    table = Table(title="Blocks")
    for col in ("block", "action", "detail"):
        table.add_column(col)
    for change in bootstrap.bootstrap_blocks():
        table.add_row(change.block, change.action, change.detail)
    console.print(table)


@app.command("submit")
def submit(
    campaign: Annotated[Path, typer.Argument(help="Campaign YAML file.")],
    deployment: Annotated[
        str, typer.Option(help="flow-name/deployment-name to run.")
    ] = "campaign/campaign",
    resume: Annotated[bool, typer.Option(help="Skip runs that already succeeded.")] = True,
    wait: Annotated[bool, typer.Option(help="Wait until the flow run finishes.")] = False,
) -> None:
    """Hand a campaign to the Prefect campaign deployment (validated here first)."""
    module = _orchestration("flows.submit")
    from evallab.spec import load_campaign, require_pinned

    spec, _ = load_campaign(campaign)
    require_pinned(spec, campaign)
    try:
        run: Any = module.submit_campaign(
            campaign, deployment=deployment, resume=resume, timeout=None if wait else 0
        )
    except LabError:
        raise
    except Exception as exc:
        # Prefect raises its own errors (unknown deployment, server down): say which and how.
        raise OrchestrationError(
            f"could not submit to deployment {deployment!r}: {type(exc).__name__}: {exc}",
            value=os.environ.get("PREFECT_API_URL", "(PREFECT_API_URL not set)"),
            fix="start the server, run `evallab prefect setup`, and set PREFECT_API_URL",
        ) from exc
    console.print(f"submitted {campaign} as flow run {run.name} ({run.id})")
    if wait:
        state = run.state.name if run.state else "unknown"
        console.print(f"flow run finished: {state}")
        if not (run.state and run.state.is_completed()):
            raise typer.Exit(code=1)


@webhook_app.command("serve")
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8787,
    watchlist: Annotated[
        Path | None,
        typer.Option(
            help="Watch list: which repos start which campaign "
            "[default: flows/watched_models.yaml in the lab's checkout]."
        ),
    ] = None,
    path: Annotated[str, typer.Option(help="URL path Hugging Face posts to.")] = "",
) -> None:
    """Receive Hugging Face webhooks and post hf.model.released to Prefect for new commits.

    The secret comes from EVALLAB_WEBHOOK_SECRET (never from the command line, where other
    users of the machine could read it). Events go to the Prefect server named by
    PREFECT_API_URL (environment or active Prefect profile); without one it refuses to start.
    A delivery is answered 202 only once that server accepted the event, 503 otherwise.
    SIGTERM or Ctrl-C stops it after the requests in progress.
    """
    from evallab.watch import load_watchlist
    from evallab.webhook import DEFAULT_PATH, make_server, require_secret

    secret = os.environ.get("EVALLAB_WEBHOOK_SECRET", "")
    require_secret(secret)
    watched = load_watchlist(watchlist or _checkout() / "flows" / "watched_models.yaml")
    watch_flow = _orchestration("flows.watch_models")
    api_url = watch_flow.prefect_api_url()  # refuses to go on without one
    emit = watch_flow.release_poster(api_url)
    # One line per request (evallab.webhook) and uvicorn's start/stop lines, on stderr; Prefect's
    # own logging configuration (root at WARNING) stays as it is for everything else.
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(message)s"))
    for name in ("evallab.webhook", "uvicorn"):
        logger = logging.getLogger(name)
        logger.handlers = [handler]
        logger.setLevel(logging.INFO)
        logger.propagate = False
    server = make_server(
        host, port, secret=secret, watchlist=watched, emit=emit, path=path or DEFAULT_PATH
    )
    console.print(
        f"listening on http://{host}:{port}{path or DEFAULT_PATH}, announcing to {api_url}",
        highlight=False,
        soft_wrap=True,
    )
    try:
        server.run()  # on SIGINT/SIGTERM: stops accepting, finishes the requests in progress
    except KeyboardInterrupt:  # uvicorn re-raises Ctrl-C once it has stopped
        console.print("stopped")
