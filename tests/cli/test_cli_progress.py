"""Progress without a terminal: plain lines, no bars, and one line as each task ends."""

from __future__ import annotations

import exitsearch_cli._console as console_module
from exitsearch_cli._console import RichProgress


def test_without_a_terminal_progress_prints_plain_lines_only(capsys, monkeypatch):
    monkeypatch.setattr(console_module, "PLAIN_EVERY", 0.0)  # a line at every step
    with RichProgress() as progress:
        progress.start("heads epoch 1/1", 3)
        for _ in range(3):
            progress.advance("heads epoch 1/1", loss=0.5)
        progress.finish("heads epoch 1/1")
        progress.start("predict val", 4)
        progress.advance("predict val", 2)  # stopped before its end: said where
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[0].startswith("heads epoch 1/1: 1/3 steps, 0s elapsed, about 0s left loss 0.5")
    assert lines[1].startswith("heads epoch 1/1: 2/3 steps")
    assert lines[2] == "heads epoch 1/1: 3/3 steps in 0s loss 0.5"  # the last step's line
    assert lines[3].startswith("predict val: 2/4 steps, 0s elapsed")
    assert lines[4] == "predict val: 2/4 steps in 0s"
    assert len(lines) == 5
    assert not any(c in "".join(lines) for c in "━╸")  # no bars
