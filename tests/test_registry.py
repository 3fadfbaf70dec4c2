"""The one registry type behind every extension point."""

from __future__ import annotations

import sys

import pytest

from exitsearch.errors import ConfigError
from exitsearch.registry import Registry


def test_a_name_holds_one_object():
    reg: Registry[object] = Registry("widget")
    a, b = object(), object()
    reg.add("a", a)
    reg.add("a", a)  # the same object again: a module imported twice
    with pytest.raises(ValueError, match="widget 'a' is already registered"):
        reg.add("a", b)
    assert reg.get("a") is a and "a" in reg and "b" not in reg


def test_unknown_names_are_one_line_config_errors_listing_the_known():
    reg: Registry[int] = Registry("widget")
    reg.register("zeta")(1)
    reg.register("alpha")(2)
    with pytest.raises(ConfigError, match=r"^unknown widget 'x'; known: alpha, zeta$"):
        reg.get("x")
    assert reg.names() == ["alpha", "zeta"]
    assert reg.items() == [("zeta", 1), ("alpha", 2)]  # registration order


def test_builtins_are_imported_on_first_lookup(tmp_path, monkeypatch):
    (tmp_path / "widget_builtin.py").write_text(
        "from test_registry_target import REG\nREG.add('builtin', 42)\n"
    )
    (tmp_path / "test_registry_target.py").write_text(
        "from exitsearch.registry import Registry\nREG = Registry('widget', ['widget_builtin'])\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    from test_registry_target import REG  # type: ignore[import-not-found]

    assert "widget_builtin" not in sys.modules
    assert REG.get("builtin") == 42 and "widget_builtin" in sys.modules


def test_scoped_entries_are_gone_after_the_block():
    reg: Registry[int] = Registry("widget")
    reg.add("kept", 1)
    with reg.scoped():
        reg.add("temporary", 2)
        assert reg.names() == ["kept", "temporary"]
    assert reg.names() == ["kept"]


@pytest.mark.parametrize(
    ("module", "lookup", "message"),
    [
        ("exitsearch.heads.registry", "get_head_class", "unknown head type 'nope'; known: "),
        ("exitsearch.core.criteria", "create_criterion", "unknown exit criterion 'nope'; known: "),
        (
            "exitsearch.finetune.registry",
            "get_strategy_class",
            "unknown fine-tuning strategy 'nope'",
        ),
        ("exitsearch.pausing.tasks", "list_tasks", None),
        ("exitsearch.data.sources", "source_names", None),
        ("exitsearch.search.samplers", "list_samplers", None),
    ],
)
def test_every_extension_point_uses_it(module, lookup, message):
    import importlib

    mod = importlib.import_module(module)
    assert isinstance(mod.REGISTRY, Registry)
    if message is None:
        assert getattr(mod, lookup)()  # built-ins are registered
        return
    with pytest.raises(ConfigError, match=message):
        getattr(mod, lookup)("nope")
