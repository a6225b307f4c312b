"""A search cluster seen through :class:`service.hunt.client.SearchClient`, without a node.

``FakeSearchClient(docs)`` serves the documents of an index to every query over it (it does not
evaluate Lucene: tests that need matching use the real node), page by page through scroll ids, and
records what it was asked. ``refuse`` maps a substring of a query to an error with an HTTP status
(a 400 the node gives for a query it cannot parse; a 503 for a failing cluster).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from typing import Any


class FakeApiError(Exception):
    """An error with a ``status_code``, like the official clients' API errors."""

    def __init__(self, status_code: int, message: str) -> None:
        super().__init__(f"{status_code}: {message}")
        self.status_code = status_code


class FakeSearchClient:
    def __init__(self, docs: Mapping[str, Sequence[Mapping[str, Any]]],
                 refuse: Mapping[str, int] | None = None) -> None:
        self.docs = {index: list(items) for index, items in docs.items()}
        self.refuse = dict(refuse or {})
        self.searches: list[dict[str, Any]] = []
        self.scrolls = 0
        self.open_scrolls: dict[str, tuple[list[dict[str, Any]], int, int]] = {}
        self.cleared: list[str] = []
        self.closed = False
        self._next = 0
        self.gate: asyncio.Event | None = None
        """Set to an unset event: searches wait on it (a slow cluster)."""

    def _hits(self, index: str) -> list[dict[str, Any]]:
        names = [i for i in self.docs if i == index or (index.endswith("*") and i.startswith(index[:-1]))]
        return [{"_index": name, "_id": str(doc.get("_id", n)), "_source": {k: v for k, v in doc.items() if k != "_id"}}
                for name in sorted(names) for n, doc in enumerate(self.docs[name])]

    async def search(self, *, index: str, query: dict[str, Any], size: int, scroll: str) -> dict[str, Any]:
        self.searches.append({"index": index, "query": query, "size": size, "scroll": scroll})
        if self.gate is not None:
            await self.gate.wait()
        text = json.dumps(query)
        for needle, status in self.refuse.items():
            if needle in text:
                raise FakeApiError(status, f"refused query containing {needle!r}")
        hits = self._hits(index)
        self._next += 1
        scroll_id = f"scroll-{self._next}"
        self.open_scrolls[scroll_id] = (hits, size, size)
        return {"_scroll_id": scroll_id, "hits": {"hits": hits[:size]}}

    async def scroll(self, *, scroll_id: str, scroll: str) -> dict[str, Any]:
        self.scrolls += 1
        hits, size, offset = self.open_scrolls[scroll_id]
        self.open_scrolls[scroll_id] = (hits, size, offset + size)
        return {"_scroll_id": scroll_id, "hits": {"hits": hits[offset:offset + size]}}

    async def clear_scroll(self, *, scroll_id: str) -> None:
        self.cleared.append(scroll_id)
        self.open_scrolls.pop(scroll_id, None)

    async def close(self) -> None:
        self.closed = True
