"""The ``exitsearch`` command."""

from __future__ import annotations

import typer
from exitsearch_cli import backbone
from exitsearch_cli.profile import profile

app = typer.Typer(
    name="exitsearch",
    help="Budget-aware search for early-exit placement in Vision Transformers. "
    "Costs are FLOPs counted as multiply-accumulates (1 MAC = 1 FLOP, fvcore's convention).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(backbone.app, name="backbone")
app.command("profile")(profile)


if __name__ == "__main__":
    app()
