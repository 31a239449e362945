"""A tiny name -> factory registry, one per family of interchangeable parts (trackers, frame sources).

mosic's own parts register when their package is imported (``mosic.data``, ``mosic.precompute.trackers``
import their plug-in modules in ``__init__``). Other distributions plug in through entry points:
declare ``name = "pkg.module:Factory"`` in the registry's group (``mosic.trackers``,
``mosic.sources``); they are loaded the first time a name is looked up.
"""

from __future__ import annotations

from importlib import metadata
from typing import Callable, Generic, TypeVar

from mosic import MosicError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str, entry_point_group: str | None = None):
        self.kind = kind
        self.entry_point_group = entry_point_group
        self._entries: dict[str, Callable[..., T]] = {}
        self._plugins_loaded = entry_point_group is None

    def _load_plugins(self) -> None:
        if self._plugins_loaded:
            return
        self._plugins_loaded = True
        for ep in metadata.entry_points(group=self.entry_point_group):
            if ep.name in self._entries:
                continue  # a built-in part keeps its name
            try:
                self._entries[ep.name] = ep.load()
            except Exception as e:  # a broken plug-in must not take the built-in parts down
                self._entries[ep.name] = _broken_plugin(self.kind, ep, e)

    def register(self, name: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
        def deco(factory: Callable[..., T]) -> Callable[..., T]:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = factory
            return factory

        return deco

    def get(self, name: str) -> Callable[..., T]:
        self._load_plugins()
        try:
            return self._entries[name]
        except KeyError:
            raise MosicError(
                f"unknown {self.kind} {name!r}; choose one of: {', '.join(self.names())}"
            ) from None

    def create(self, name: str, *args, **kwargs) -> T:
        return self.get(name)(*args, **kwargs)

    def names(self) -> list[str]:
        self._load_plugins()
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        self._load_plugins()
        return name in self._entries


def _broken_plugin(kind: str, ep: metadata.EntryPoint, error: Exception) -> Callable:
    def fail(*args, **kwargs):
        raise MosicError(f"{kind} plug-in {ep.name!r} ({ep.value}) failed to import: {error}")

    return fail
