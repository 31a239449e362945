"""Registries: built-in parts register from their package, plug-ins come through entry points,
and the imports run one way (a plug-in module imports the base, the base never imports plug-ins)."""

import ast
from importlib import metadata
from pathlib import Path

import pytest

from mosic import MosicError
from mosic.registry import Registry

ROOT = Path(__file__).resolve().parent.parent


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return names


@pytest.mark.parametrize(
    "base, plugins",
    [
        ("mosic/data/base.py", ["mosic.data.sources", "mosic.data.synthetic", "mosic.data.video_files"]),
        ("precompute/trackers/base.py", ["mosic.precompute.trackers.cotracker",
                                          "mosic.precompute.trackers.lk", "mosic.precompute.trackers.oracle"]),
    ],
)
def test_base_modules_do_not_import_their_plugins(base, plugins):
    imported = _imports(ROOT / base)
    assert not imported & set(plugins), f"{base} imports {imported & set(plugins)}: an import cycle"


def test_builtin_trackers_registered_by_package():
    from mosic.precompute.trackers import TRACKERS

    assert {"cotracker3", "lk", "oracle"} <= set(TRACKERS.names())


class _FakeEntryPoint:
    def __init__(self, name, value, obj=None, error=None):
        self.name, self.value, self._obj, self._error = name, value, obj, error

    def load(self):
        if self._error:
            raise self._error
        return self._obj


def test_entry_point_plugins_are_loaded_lazily(monkeypatch):
    def factory():
        return "made by plug-in"

    calls = []

    def fake_entry_points(group):
        calls.append(group)
        return [_FakeEntryPoint("mine", "pkg:factory", factory),
                _FakeEntryPoint("builtin", "pkg:other", lambda: "plug-in must not win"),
                _FakeEntryPoint("broken", "pkg:missing", error=ImportError("no module named pkg"))]

    monkeypatch.setattr(metadata, "entry_points", fake_entry_points)
    reg: Registry = Registry("widget", entry_point_group="test.widgets")
    reg.register("builtin")(lambda: "built-in")
    assert calls == []  # nothing loaded before the first lookup
    assert reg.create("mine") == "made by plug-in"
    assert reg.create("builtin") == "built-in"
    assert reg.names() == ["broken", "builtin", "mine"]
    with pytest.raises(MosicError, match="plug-in 'broken'.*no module named pkg"):
        reg.create("broken")
    assert calls == ["test.widgets"]  # loaded once
    with pytest.raises(MosicError, match="unknown widget 'nope'; choose one of: broken, builtin, mine"):
        reg.get("nope")
