"""The ``exitsearch`` command."""

from __future__ import annotations

from typing import Annotated

import typer
from exitsearch_cli import backbone, heads, pause
from exitsearch_cli._console import DEBUG_ENV, OneLineErrorGroup, set_debug
from exitsearch_cli.bench import bench
from exitsearch_cli.export import export
from exitsearch_cli.finetune import finetune, finetune_compare
from exitsearch_cli.profile import profile
from exitsearch_cli.run import run
from exitsearch_cli.serve import serve

app = typer.Typer(
    name="exitsearch",
    help="Budget-aware search for early-exit placement in Vision Transformers. "
    "Costs are FLOPs counted as multiply-accumulates (1 MAC = 1 FLOP, fvcore's convention).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    cls=OneLineErrorGroup,
)


@app.callback()
def main(
    debug: Annotated[
        bool,
        typer.Option(
            "--debug",
            help=f"Show the traceback of an error instead of one line (also {DEBUG_ENV}=1).",
        ),
    ] = False,
) -> None:
    """Budget-aware search for early-exit placement in Vision Transformers.

    Costs are FLOPs counted as multiply-accumulates (1 MAC = 1 FLOP, fvcore's convention)."""
    set_debug(debug)


app.add_typer(backbone.app, name="backbone")
app.add_typer(heads.app, name="heads")
app.add_typer(pause.app, name="pause")
app.command("profile")(profile)
app.command("run")(run)
app.command("export")(export)
app.command("bench")(bench)
app.command("serve")(serve)
app.command("finetune")(finetune)
app.command("finetune-compare")(finetune_compare)

if __name__ == "__main__":
    app()
