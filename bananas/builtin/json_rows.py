"""Encode a batch of similar mappings (the jobs of one ``enqueue_many``) as JSON, writing what they share once.

The jobs of one call share most of their fields as the very same objects: name, priority, status, the retry
count, the timeout, the queue, the timestamps (one clock read per call). Only the id, the payload and the headers
dict are new per job. :class:`RowEncoder` learns from two consecutive rows which positions vary, keeps the text
between them, and for each next row with the same keys and the same objects elsewhere writes only the varying
values (a C-level identity check over the rest). The JSON of a dict is the concatenation of its items' encodings, so
the bytes are exactly the whole-dict encoding's; any row that does not fit (other keys, other objects, a value the
C encoder refuses) is handed back to the caller's full path.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["RowEncoder"]

_is = operator.is_


class RowEncoder:
    """One batch's template state (not shared between threads: make one per batch). ``encode(row)`` returns the
    row's JSON text, or ``None`` when the caller must encode it the normal way."""

    __slots__ = ("_base", "_const", "_enc", "_getter", "_keys", "_segments", "_steps")

    def __init__(self, encode: Callable[[Any, int], Sequence[str]]) -> None:
        self._enc = encode
        self._keys: tuple[str, ...] | None = None
        self._base: list[Any] | None = None  # the previous row's values, while no template is known
        self._getter: Callable[[Sequence[Any]], Any] | None = None
        self._const: Any = None
        self._segments: list[str] = []
        self._steps: tuple[tuple[int, str], ...] = ()  # (position of a varying value, the text after it)

    def _text(self, value: Any) -> str:
        return "".join(self._enc(value, 0))

    def encode(self, row: Any) -> str | None:
        if type(row) is not dict or not row:
            return None
        keys = tuple(row)
        values = list(row.values())
        if keys == self._keys and self._getter is not None and all(map(_is, self._getter(values), self._const)):
            # the C encoder returns a value's text in chunks: they go straight into the row's parts, joined once
            enc = self._enc
            parts = [self._segments[0]]
            try:
                for i, after in self._steps:
                    parts += enc(values[i], 0)
                    parts.append(after)
            except (TypeError, ValueError, RecursionError):
                return None
            return "".join(parts)
        return self._learn(keys, values)

    def _learn(self, keys: tuple[str, ...], values: list[Any]) -> str | None:
        """Encode ``values`` item by item; with the previous row's values of the same keys, make the template."""
        if any(type(k) is not str for k in keys):  # json writes other keys as strings: not an item-wise encoding
            self._keys = self._base = self._getter = None
            return None
        try:
            items = [("{" if i == 0 else ",") + self._text(k) + ":" for i, k in enumerate(keys)]
            texts = [self._text(v) for v in values]
        except (TypeError, ValueError, RecursionError):
            self._keys = self._base = self._getter = None
            return None
        base = self._base if keys == self._keys else None
        self._keys, self._base, self._getter = keys, values, None
        if base is not None:
            varying = tuple(i for i, (a, b) in enumerate(zip(values, base, strict=True)) if a is not b)
            const = tuple(i for i in range(len(keys)) if i not in varying)
            if varying and const:
                segments, current = [], ""
                for i in range(len(keys)):
                    current += items[i]
                    if i in varying:
                        segments.append(current)
                        current = ""
                    else:
                        current += texts[i]
                segments.append(current + "}")
                self._segments = segments
                self._steps = tuple(zip(varying, segments[1:], strict=True))
                self._getter = operator.itemgetter(*const) if len(const) > 1 else (lambda v, i=const[0]: (v[i],))
                self._const = self._getter(values)
        return "".join(item + text for item, text in zip(items, texts, strict=True)) + "}"
