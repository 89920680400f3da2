"""``evallab prefetch``: fetch what a campaign needs so it can later run with ``--offline``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from evallab.cli.console import console, styled

if TYPE_CHECKING:
    from evallab.offline import Need

__all__ = ["app"]

app = typer.Typer()

_STYLE = {"present": "green", "fetched": "cyan", "missing": "bold red"}


@app.command("prefetch")
def prefetch_cmd(
    campaign: Annotated[Path, typer.Argument(help="Campaign YAML file.")],
) -> None:
    """Download every model, dataset and runtime a campaign needs, at its pinned revisions.

    Hub models go to the Hugging Face cache (HF_HOME) at their commit, hub datasets of its tasks
    at their pinned revision, runtimes into their virtualenvs (as `evallab runtime install`).
    What is already here is left alone, so running it again is cheap. Afterwards
    `evallab run --offline CAMPAIGN` needs no network.
    """
    from evallab.offline import prefetch
    from evallab.spec import load_campaign, require_pinned

    spec, base_dir = load_campaign(campaign)
    require_pinned(spec, campaign)
    table = Table(title=f"What campaign {spec.name} needs locally")
    for col in ("kind", "name", "what", "state"):
        table.add_column(col, overflow="fold")

    def row(need: Need, outcome: str) -> None:
        table.add_row(
            need.kind, need.name, need.what, styled(f"[{_STYLE[outcome]}]{{}}[/]", outcome)
        )

    with console.status("Fetching what is missing (models, datasets, runtimes)"):
        left = prefetch(spec, base_dir, on_need=row)
    console.print(table if table.row_count else "nothing to fetch: tiny models are built locally")
    if left:
        from evallab.errors import SpecError

        raise SpecError(
            f"{len(left)} local item(s) can't be fetched: " + "; ".join(n.describe() for n in left),
            value=campaign,
            fix="create the local model folders / data files the campaign names",
        )
    console.print(f"ready: `evallab run --offline {campaign}` needs no network")
