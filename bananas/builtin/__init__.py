"""The kernel's own plugins, registered through the same hooks as third-party ones."""

BUILTIN_PLUGINS: tuple[str, ...] = (
    "bananas.builtin.memory_broker",
    "bananas.builtin.memory_results",
    "bananas.builtin.json_serializer",
    "bananas.builtin.priority_router",
    "bananas.builtin.stdout_logsink",
    "bananas.builtin.default_mode",
    "bananas.builtin.thin_mode",
)
"""Module names of the built-in plugins; any of them but ``ESSENTIAL_PLUGINS`` can be blocked."""

ESSENTIAL_PLUGINS: frozenset[str] = frozenset({"bananas.builtin.json_serializer"})
