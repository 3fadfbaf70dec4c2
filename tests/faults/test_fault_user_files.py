"""Faults that used to cost the user files, and the property that none does any more.

Round two of the fault suite: ``export --overwrite`` onto what is not exitsearch's bundle, the
run lock's sweep of temporary files, ``--storage`` naming a file of the user's, the modes of
bundles under the user's umask, and storage passwords in messages. Every case runs with the
user's own files around and inside its run folder (``fault_user_files``), compared by hash
afterwards; the Hypothesis property at the end draws such trees at random.
"""

from __future__ import annotations

import os
import re
import sqlite3
import stat
from pathlib import Path

import pytest
from fault_tiny_run import TinyRun, invoke
from fault_user_files import USER_FILES, UserTree
from fault_world import one_line_error, run_cli, temp_files
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exitsearch.export import load_bundle
from exitsearch.report import schema

pytestmark = [
    pytest.mark.usefixtures("user_tree"),
    pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning"),
]


def assert_error(result, fragment: str, code: int = 2) -> str:  # type: ignore[no-untyped-def]
    """One ``error:`` line holding ``fragment`` and exit status ``code``, nothing else."""
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        f"uncaught {type(result.exception).__name__}: {result.exception}"
    )
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    line = one_line_error(result.stderr)
    assert fragment in line, line
    return line


# ------------------------------------------------------------------ export --overwrite
def _bundle_with_a_file_of_mine(tiny_run: TinyRun, dest: Path) -> None:
    import shutil

    shutil.copytree(tiny_run.bundle, dest)
    (dest / "my-notes.txt").write_text("notes I keep with the model\n")


def _folder_of_mine(tiny_run: TinyRun, dest: Path) -> None:
    (dest / "photos").mkdir(parents=True)
    (dest / "photos" / "cat.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (dest / "thesis.tex").write_text("\\documentclass{article}\n")


def _plain_file(tiny_run: TinyRun, dest: Path) -> None:
    dest.write_text("a plain file of mine\n")


def _link_to_my_folder(tiny_run: TinyRun, dest: Path) -> None:
    target = dest.with_name("linked-target")
    target.mkdir()
    (target / "data.txt").write_text("behind a link\n")
    dest.symlink_to(target)


def _fake_manifest(tiny_run: TinyRun, dest: Path) -> None:
    dest.mkdir()
    (dest / "exitsearch.json").write_text('{"my": "own json"}\n')
    (dest / "keep.txt").write_text("keep\n")


OVERWRITE_TARGETS = [
    pytest.param(_folder_of_mine, "not an exitsearch bundle", id="folder-of-mine"),
    pytest.param(_plain_file, "is a file, not a bundle", id="plain-file"),
    pytest.param(_link_to_my_folder, "is a link, not a bundle", id="link"),
    pytest.param(
        _bundle_with_a_file_of_mine,
        "holds files exitsearch did not write (my-notes.txt)",
        id="bundle-plus-my-file",
    ),
    pytest.param(_fake_manifest, "not an exitsearch bundle", id="json-named-like-a-manifest"),
]


def _tree_digest(path: Path) -> dict[str, bytes]:
    if path.is_symlink() or path.is_file():
        return {".": path.read_bytes() if path.is_file() else os.readlink(path).encode()}
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in path.rglob("*") if p.is_file()}


@pytest.mark.slow
@pytest.mark.parametrize(("make", "fragment"), OVERWRITE_TARGETS)
def test_export_overwrite_refuses_what_it_did_not_write(
    tiny_run: TinyRun, tmp_path: Path, make, fragment: str
):
    dest = tmp_path / "out" / "b"
    dest.parent.mkdir()
    make(tiny_run, dest)
    before = _tree_digest(dest)
    result = invoke(["export", str(tiny_run.run_dir), "--out", str(dest), "--overwrite"])
    line = assert_error(result, fragment)
    assert "--overwrite" in line
    assert _tree_digest(dest) == before
    assert [p.name for p in dest.parent.iterdir() if p.name.startswith(".")] == []


@pytest.mark.slow
def test_export_overwrite_replaces_its_own_bundle(tiny_run: TinyRun, tmp_path: Path):
    dest = tmp_path / "b"
    assert invoke(["export", str(tiny_run.run_dir), "--out", str(dest)]).exit_code == 0
    (dest / "heads.safetensors").write_bytes(b"damaged")  # listed by the manifest: exitsearch's
    result = invoke(["export", str(tiny_run.run_dir), "--out", str(dest), "--overwrite"])
    assert result.exit_code == 0, result.output
    load_bundle(dest)  # every checksum holds again
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".b")) == []


# ---------------------------------------------------------------- the run lock's sweep
@pytest.mark.slow
def test_the_lock_sweeps_only_its_own_temp_files(tiny_run: TinyRun, user_tree: UserTree):
    run = tiny_run.copy_run(user_tree.run_dir)
    heads = next((run / schema.CACHE_DIR).glob("heads-*"))
    own = [
        run / ".pareto.json.k3j_9x2a.tmp",  # a killed atomic write at the top
        heads / ".heads.safetensors.0a1b2c3d.tmp",  # one inside a stage folder
    ]
    for path in own:
        path.write_bytes(b"left by a killed writer")
    (run / "export" / ".config-3.abcd1234.tmp").mkdir(parents=True)  # a killed export's folder
    result = invoke(tiny_run.run_args(run))
    assert result.exit_code == 0, result.output
    assert not any(p.exists() for p in own)
    assert not (run / "export" / ".config-3.abcd1234.tmp").exists()
    # the user's .tmp files (the user_tree fixture checks their contents after the case)
    assert {p for p in temp_files(run)} == {
        rel.removeprefix("run/") for rel in USER_FILES if rel.startswith("run/") and ".tmp" in rel
    }


# --------------------------------------------------------------------------- --storage
def _sqlite_of_another_program(path: Path) -> None:
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE recipes (name TEXT, minutes INTEGER)")
    con.execute("INSERT INTO recipes VALUES ('bread', 240)")
    con.commit()
    con.close()


STORAGE_FILES = [
    pytest.param(
        "notes.log",
        lambda p: p.write_text("2026-12-01 my experiment log\nline two\n"),
        "exists and is not an Optuna journal",
        id="text-log",
    ),
    pytest.param(
        "events.jsonl",
        lambda p: p.write_text('{"event": "mine"}\n'),
        "exists and is not an Optuna journal",
        id="json-lines-of-mine",
    ),
    pytest.param(
        "notes.db",
        lambda p: p.write_text("not a database\n"),
        "exists and is not an Optuna SQLite database",
        id="text-as-db",
    ),
    pytest.param(
        "recipes.db",
        _sqlite_of_another_program,
        "a SQLite database of another program (tables: recipes)",
        id="sqlite-of-another-program",
    ),
    pytest.param("folder.db", lambda p: p.mkdir(), "is a folder", id="folder"),
]


@pytest.mark.parametrize(("name", "make", "fragment"), STORAGE_FILES)
def test_storage_refuses_a_file_of_mine_before_any_work(
    tiny_run: TinyRun, tmp_path: Path, name: str, make, fragment: str
):
    storage = tmp_path / name
    make(storage)
    before = storage.read_bytes() if storage.is_file() else None
    run = tmp_path / "run"
    line = assert_error(invoke(tiny_run.run_args(run, "--storage", str(storage))), fragment)
    assert str(storage) in line
    assert (storage.read_bytes() if storage.is_file() else None) == before
    # refused before any stage: no profile, no heads
    assert not list((run / schema.CACHE_DIR).glob("*-*"))


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://ann:s3cr3t-pw@127.0.0.1:1/exitsearch",
        "postgresql://ann:p@ss@127.0.0.1:1/exitsearch",  # '@' inside the password
    ],
    ids=["plain", "at-sign"],
)
def test_a_storage_password_is_never_shown(tiny_run: TinyRun, tmp_path: Path, url: str):
    run = tmp_path / "run"
    result = invoke(tiny_run.run_args(run, "--storage", url))
    line = assert_error(result, "cannot open Optuna storage postgresql://ann:***@127.0.0.1:1")
    password = url.split("ann:")[1].rsplit("@", 1)[0]
    assert password not in result.output
    assert password not in line
    # the server is tried before any stage, so an unreachable one costs nothing
    assert not list((run / schema.CACHE_DIR).glob("*-*"))


# -------------------------------------------------------------------- the user's umask
@pytest.mark.slow
@pytest.mark.parametrize("umask", [0o022, 0o027, 0o002], ids=["022", "027", "002"])
def test_a_bundle_is_created_with_the_users_umask(tiny_run: TinyRun, tmp_path: Path, umask: int):
    dest = tmp_path / "b"
    old = os.umask(umask)
    try:
        result = invoke(["export", str(tiny_run.run_dir), "--out", str(dest)])
    finally:
        os.umask(old)
    assert result.exit_code == 0, result.output
    modes = {
        p.relative_to(tmp_path).as_posix(): stat.S_IMODE(p.stat().st_mode)
        for p in [dest, *dest.rglob("*")]
    }
    for name, mode in modes.items():
        want = (0o777 if (tmp_path / name).is_dir() else 0o666) & ~umask
        assert mode == want, (name, oct(mode), oct(want))


# -------------------------------------------------------- the property: any tree of mine
_DIRS = ["", "analysis", "analysis/deep", "cache/notes", "export/mine", "cache", "export"]
_OWN_PLACES = ("", "cache", "export")
_EXITSEARCH_TEMP = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")

names = st.builds(
    lambda hidden, stem, suffix: ("." if hidden else "") + stem + suffix,
    st.booleans(),
    st.text(alphabet="abcdefghij_0123456789-", min_size=1, max_size=12),
    st.sampled_from(["", ".tmp", ".json", ".txt", ".abcdefgh.tmp", ".db", ".npz"]),
)
trees = st.dictionaries(
    st.tuples(st.sampled_from(_DIRS), names).filter(
        # exitsearch's own temporary names in its own folders are its to sweep
        lambda t: not (t[0] in _OWN_PLACES and _EXITSEARCH_TEMP.match(t[1]))
    ),
    st.binary(min_size=0, max_size=64),
    min_size=1,
    max_size=8,
)


@pytest.mark.slow
@settings(
    max_examples=8,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(tree=trees)
def test_no_fault_touches_a_file_of_mine(tiny_run: TinyRun, tmp_path_factory, tree):
    """Any tree of the user's files inside the run folder is byte-identical after a run that
    takes the lock, sweeps, reuses the caches, fails on its budget, and an export that refuses
    to overwrite a folder of the user's."""
    root = tmp_path_factory.mktemp("tree")
    run = tiny_run.copy_run(root / "run")
    files = {}
    for (folder, name), data in tree.items():
        path = run / folder / name
        if path.exists():  # one of exitsearch's own files
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        files[path] = data
    mine = root / "mine"
    mine.mkdir()
    (mine / "keep.txt").write_text("keep")
    result = invoke(tiny_run.run_args(run, budget="0.0001%"))
    assert result.exit_code == 2, result.output  # after "profile: reusing the cached profile"
    assert result.stderr.strip().splitlines()[-1].startswith("error: budget 0.0001%")
    assert_error(
        invoke(["export", str(run), "--out", str(mine), "--overwrite"]), "not an exitsearch bundle"
    )
    assert {p: p.read_bytes() for p in files if p.is_file()} == files
    assert (mine / "keep.txt").read_text() == "keep"


@pytest.mark.slow
def test_a_storage_password_in_a_real_process(tiny_run: TinyRun, tmp_path: Path):
    """The real command, warnings and all: one line on stderr, the password masked."""
    run = tmp_path / "run"
    done = run_cli(tiny_run.run_args(run, "--storage", "postgresql://ann:hunter2@127.0.0.1:1/x"))
    assert done.returncode == 2, done.stderr
    line = one_line_error(done.stderr)
    assert "postgresql://ann:***@127.0.0.1:1/x" in line, line
    assert "hunter2" not in done.stderr + done.stdout


@pytest.mark.slow
def test_a_fine_tuned_bundle_is_created_with_the_users_umask(tiny_run: TinyRun, tmp_path: Path):
    out = tmp_path / "ft"
    old = os.umask(0o027)
    try:
        args = ["finetune", str(tiny_run.bundle), "-s", "classifier-wise", "--epochs", "1"]
        result = invoke([*args, "--limit", "100", "--out", str(out), "--no-progress"])
    finally:
        os.umask(old)
    assert result.exit_code == 0, result.output
    for p in [out, *out.rglob("*")]:
        want = 0o750 if p.is_dir() else 0o640
        assert stat.S_IMODE(p.stat().st_mode) == want, (p, oct(stat.S_IMODE(p.stat().st_mode)))


def test_the_recorded_command_line_masks_a_password(monkeypatch: pytest.MonkeyPatch):
    """What commands record in their result files (``"command"``) shows no password."""
    from exitsearch_cli._console import invocation

    argv = ["exitsearch", "pause", "search", "RUN", "--storage", "postgresql://u:pw%40x@db/s"]
    monkeypatch.setattr("sys.argv", argv)
    recorded = invocation()
    assert "pw%40x" not in recorded
    assert recorded.endswith("--storage 'postgresql://u:***@db/s'")
