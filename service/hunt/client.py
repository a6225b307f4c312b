"""The search cluster as a hunt sees it: a scroll over one query, for Elasticsearch or OpenSearch.

:class:`SearchClient` is the whole contract (tests use a fake from ``tests.support.search``);
:func:`open_client` builds it over the official async clients with the ``hunt:`` settings'
credentials. Scroll (rather than point-in-time) because both servers answer it identically and it
pages a fixed snapshot of the indices for as long as the hunt reads.
"""

from __future__ import annotations

from typing import Any, Protocol

from service.errors import RetriableError
from service.hunt.convert import Target
from service.hunt.settings import HuntSettings


class SearchError(RetriableError):
    """The cluster could not be reached or refused a request (the reason never holds a credential)."""


class SearchClient(Protocol):
    async def search(self, *, index: str, query: dict[str, Any], size: int, scroll: str) -> dict[str, Any]:
        """The first page of ``query`` over ``index`` and a scroll id for the next."""
        ...

    async def scroll(self, *, scroll_id: str, scroll: str) -> dict[str, Any]:
        ...

    async def clear_scroll(self, *, scroll_id: str) -> None:
        ...

    async def close(self) -> None:
        ...


class _Official:
    """Either official async client behind :class:`SearchClient` (their scroll APIs agree)."""

    def __init__(self, client: Any) -> None:
        self._client = client

    async def search(self, *, index: str, query: dict[str, Any], size: int, scroll: str) -> dict[str, Any]:
        if self._opensearch:
            return _body(await self._client.search(index=index, body={"query": query, "size": size, "sort": ["_doc"]},
                                                   scroll=scroll, params={"ignore_unavailable": "true"}))
        return _body(await self._client.search(index=index, query=query, size=size, sort=["_doc"], scroll=scroll,
                                               ignore_unavailable=True))

    @property
    def _opensearch(self) -> bool:
        return type(self._client).__module__.startswith("opensearchpy")

    async def scroll(self, *, scroll_id: str, scroll: str) -> dict[str, Any]:
        if self._opensearch:
            return _body(await self._client.scroll(body={"scroll_id": scroll_id, "scroll": scroll}))
        return _body(await self._client.scroll(scroll_id=scroll_id, scroll=scroll))

    async def clear_scroll(self, *, scroll_id: str) -> None:
        if self._opensearch:
            await self._client.clear_scroll(body={"scroll_id": [scroll_id]})
        else:
            await self._client.clear_scroll(scroll_id=scroll_id)

    async def close(self) -> None:
        await self._client.close()


def _body(result: Any) -> dict[str, Any]:
    body = getattr(result, "body", result)
    if not isinstance(body, dict):
        raise SearchError(f"unexpected search answer of type {type(body).__name__}")
    return body


def open_client(settings: HuntSettings, target: Target, url: str) -> SearchClient:
    """An async client for ``url`` with the settings' credentials and TLS options."""
    timeout = settings.request_timeout_s
    if target == "opensearch":
        from opensearchpy import AsyncOpenSearch

        kwargs: dict[str, Any] = {"hosts": [url], "timeout": timeout, "max_retries": 0,
                                  "verify_certs": settings.verify_certs}
        if settings.username and settings.password:
            kwargs["http_auth"] = (settings.username, settings.password.get_secret_value())
        if settings.api_key:
            kwargs["headers"] = {"Authorization": f"ApiKey {settings.api_key.get_secret_value()}"}
        if settings.ca_certs:
            kwargs["ca_certs"] = str(settings.ca_certs)
        if url.startswith("https"):
            kwargs["use_ssl"] = True
        return _Official(AsyncOpenSearch(**kwargs))
    from elasticsearch import AsyncElasticsearch

    ekw: dict[str, Any] = {"hosts": [url], "request_timeout": timeout, "max_retries": 0}
    if settings.api_key:
        ekw["api_key"] = settings.api_key.get_secret_value()
    elif settings.username and settings.password:
        ekw["basic_auth"] = (settings.username, settings.password.get_secret_value())
    if settings.ca_certs:
        ekw["ca_certs"] = str(settings.ca_certs)
    if url.startswith("https"):
        ekw["verify_certs"] = settings.verify_certs
    return _Official(AsyncElasticsearch(**ekw))
