"""Named registries of plugin specs: who registered what, and the one place a name is looked up."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Generic, Protocol, TypeVar

import attrs

from bananas.config_kernel import UNPUBLISHED, install_hint
from bananas.errors import DuplicatePlugin, UnknownPlugin

__all__ = ["KNOWN_PLUGINS", "Register", "Registration", "Registry"]

SpecT = TypeVar("SpecT")
SpecT_contra = TypeVar("SpecT_contra", contravariant=True)

KNOWN_PLUGINS: dict[tuple[str, str], str] = {
    ("broker", "redis"): "bananas-redis",
    ("broker", "rediss"): "bananas-redis",
    ("result backend", "redis"): "bananas-redis",
    ("result backend", "rediss"): "bananas-redis",
    ("serializer", "msgpack"): "bananas-msgpack",
    ("serializer", "protobuf"): "bananas-protobuf",
    ("log sink", "file"): "bananas-logfile",
    ("log sink", "elasticsearch"): "bananas-elasticsearch",
    ("worker mode", "thin_plus"): "bananas-mode-thin-plus",
    ("worker mode", "specialized"): "bananas-mode-specialized",
    ("worker mode", "job-specialized"): "bananas-mode-job-specialized",
    ("worker mode", "scaled"): "bananas-mode-scaled",
    ("worker mode", "scheduler-only"): "bananas-mode-scheduler-only",
    ("router", "job-type"): "bananas-router-job-type",
}
"""Install hints for names a missing plugin would provide. Only hints: nothing here is imported. Packages listed in
:data:`bananas.config_kernel.UNPUBLISHED` are named as not available yet instead of with ``pip install``."""


class Register(Protocol[SpecT_contra]):
    """The callable a registration hook receives."""

    def __call__(self, spec: SpecT_contra) -> None: ...


@attrs.frozen
class Registration(Generic[SpecT]):
    """One registered spec and its owner."""

    name: str
    spec: SpecT
    plugin: str
    dist: str
    version: str

    @property
    def owner(self) -> str:
        return f"{self.dist} {self.version}".strip()


@attrs.define
class Registry(Generic[SpecT]):
    """Specs of one kind (``broker``, ``serializer`` …) by name.

    Attributes:
        kind: Human name of the kind, used in messages.
        names: Returns the names a spec claims (a broker claims each URL scheme).
        shared: An equal spec registered by a second plugin is shared rather than a conflict (settings: two worker
            modes may both declare ``worker.scheduled_concurrency``); see :meth:`owners`.
    """

    kind: str
    names: Callable[[SpecT], tuple[str, ...]]
    entries: dict[str, Registration[SpecT]] = attrs.field(factory=dict)
    shared: bool = False
    co_owners: dict[str, list[Registration[SpecT]]] = attrs.field(factory=dict)

    def bound(self, plugin: str, dist: str, version: str) -> Register[SpecT]:
        """A ``register`` callable that records ``plugin`` (from ``dist`` ``version``) as the owner."""

        def register(spec: SpecT) -> None:
            self.add(spec, plugin=plugin, dist=dist, version=version)

        return register

    def add(self, spec: SpecT, *, plugin: str, dist: str, version: str) -> None:
        for name in self.names(spec):
            existing = self.entries.get(name)
            if existing is not None:
                if existing.plugin == plugin:
                    continue
                if self.shared and existing.spec == spec:
                    self.co_owners.setdefault(name, []).append(Registration(name, spec, plugin, dist, version))
                    continue
                here = f"{dist} {version}".strip()
                raise DuplicatePlugin(
                    f"{self.kind} {name!r} is claimed by two plugins: {existing.owner} ({existing.plugin}) "
                    f"and {here} ({plugin})"
                )
            self.entries[name] = Registration(name, spec, plugin, dist, version)

    def get(self, name: str) -> SpecT:
        """The spec for ``name`` (exact, else the one registered name equal to it ignoring case and ``-``/``_``), or
        :class:`UnknownPlugin` with "did you mean", what is installed and how to get ``name``."""
        entry = self.entries.get(name)
        if entry is None:
            folded = [e for key, e in self.entries.items() if _fold(key) == _fold(name)]
            if len(folded) == 1:
                return folded[0].spec
            installed = ", ".join(sorted(self.entries)) or "none"
            close = difflib.get_close_matches(name.lower(), sorted(self.entries), n=1, cutoff=0.6)
            hint = f"did you mean {close[0]!r}? " if close else ""
            message = f"no {self.kind} named {name!r}; {hint}installed: {installed}"
            dist = KNOWN_PLUGINS.get((self.kind, name))
            if dist in UNPUBLISHED:
                message += f" — {install_hint((dist,), UNPUBLISHED[dist], published=False)}"
            elif dist:
                message += f" — pip install {dist}"
            raise UnknownPlugin(message)
        return entry.spec

    def __contains__(self, name: object) -> bool:
        return name in self.entries

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self.entries))

    def by_plugin(self, plugin: str) -> list[str]:
        return sorted(
            name
            for name, entry in self.entries.items()
            if entry.plugin == plugin or any(other.plugin == plugin for other in self.co_owners.get(name, ()))
        )

    def owners(self, name: str) -> tuple[str, ...]:
        """Distributions that registered ``name`` (several for a shared spec), first registration first."""
        entries = [self.entries[name], *self.co_owners.get(name, ())] if name in self.entries else []
        return tuple(dict.fromkeys(entry.dist for entry in entries))


def _fold(name: str) -> str:
    """``Thin-Plus`` and ``thin_plus`` are the same plugin name."""
    return name.lower().replace("-", "_")
