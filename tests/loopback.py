"""httpx's one-call functions (``get``, ``post``, ...) for the suite's own servers, without TLS.

``httpx.get()`` builds a client per call, and every client loads the CA bundle for TLS: about 20 ms
of CPU, which was most of what the suite's own processes spent, as tests poll a server every 50 ms
while they wait. Every server a test talks to is plain HTTP on loopback, so these build the client
without TLS (0.2 ms) and otherwise mean what httpx's do: the same arguments, a new connection per
call. An ``https`` URL is refused rather than sent unverified.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx


def _plain(url: str) -> str:
    if not str(url).startswith("http://"):
        raise ValueError(f"loopback is for the suite's plain-HTTP servers, not {url}")
    return url


def request(method: str, url: str, **kwargs: Any) -> httpx.Response:
    return httpx.request(method, _plain(url), verify=False, **kwargs)


def get(url: str, **kwargs: Any) -> httpx.Response:
    return request("GET", url, **kwargs)


def post(url: str, **kwargs: Any) -> httpx.Response:
    return request("POST", url, **kwargs)


def delete(url: str, **kwargs: Any) -> httpx.Response:
    return request("DELETE", url, **kwargs)


@contextmanager
def stream(method: str, url: str, **kwargs: Any) -> Iterator[httpx.Response]:
    with httpx.stream(method, _plain(url), verify=False, **kwargs) as response:
        yield response
