"""The explainer client: cluster evidence -> a description from an OpenAI-compatible chat-completions endpoint.

The request and the reply's reading are pure (atlas/lens/describe.py: ``chat_request``,
``parse_chat_reply``); this module only sends it. One ``Explainer`` per job holds one
``httpx.Client`` (its connections are reused across the job's requests), made on first use in the
process that sends (a Ray worker makes its own: the client is not pickled with the job).

Per request:
1. POST ``{url}/chat/completions`` with the time-out ``timeout_s`` (CircuitLensConfig.explainer_timeout_s)
   for each phase: connect, send, and wait for the answer;
2. on a connection error, or an HTTP 429 or 5xx answer, wait ``backoff_s * 2**k`` and try again,
   at most ``retries`` more times;
3. a time-out waiting for the answer is not retried (a server that hangs would hang again, for
   ``timeout_s`` each time): it is an AtlasError naming the time-out and the setting that sets it;
   so is any other HTTP error, an answer that is not a chat-completions reply, or the last failed retry.
"""

from __future__ import annotations

import logging
import os
import time
from typing import NamedTuple

import httpx

from atlas.errors import AtlasError
from atlas.lens.describe import chat_request, parse_chat_reply

API_KEY_ENV = "ATLAS_EXPLAINER_API_KEY"  # sent as 'Authorization: Bearer ...' when set
RETRIES = 3  # further attempts after the first
BACKOFF_S = 0.5  # wait before further attempt k (0-based): BACKOFF_S * 2**k

log = logging.getLogger(__name__)


class Description(NamedTuple):
    text: str  # the explainer's answer, stripped
    prompt: str  # the exact prompt it was sent, stored with the explanation


class _Retry(Exception):
    """A failure worth another attempt (connection error, HTTP 429 / 5xx)."""


class Explainer:
    """One explainer model at one endpoint, for one job."""

    def __init__(
        self,
        url: str,
        model: str,
        timeout_s: float = 60.0,
        *,
        retries: int = RETRIES,
        backoff_s: float = BACKOFF_S,
        api_key_env: str = API_KEY_ENV,
    ):
        if retries < 0 or timeout_s <= 0:
            raise AtlasError(f"explainer: retries {retries} must be >= 0 and the time-out {timeout_s} s > 0")
        self.url, self.model, self.timeout_s = url.rstrip("/"), model, timeout_s
        self.retries, self.backoff_s, self.api_key_env = retries, backoff_s, api_key_env
        self._client: httpx.Client | None = None

    def describe(self, summary: dict) -> Description:
        """The explainer's description of one cluster's evidence (``atlas.lens.describe.summarize``)."""
        request = chat_request(summary, self.model)
        reply = self._post(request.body)
        try:
            return Description(parse_chat_reply(reply.json()), request.prompt)
        except ValueError as exc:  # not JSON, or not the chat-completions shape
            raise self._error(f"answered what is not a chat-completions reply: {exc}") from None

    def _post(self, body: dict) -> httpx.Response:
        """POST the body, retrying connection errors and HTTP 429 / 5xx (module docstring, steps 1-3)."""
        for attempt in range(self.retries + 1):
            try:
                return self._attempt(body)
            except _Retry as exc:
                if attempt == self.retries:
                    raise self._error(f"failed {attempt + 1} times; the last: {exc}") from None
                wait = self.backoff_s * 2**attempt
                log.warning("explainer %s: %s; retrying in %.1f s", self.url, exc, wait)
                time.sleep(wait)
        raise AssertionError("unreachable")

    def _attempt(self, body: dict) -> httpx.Response:
        try:
            r = self.client.post("/chat/completions", json=body)
        except httpx.TimeoutException as exc:
            if isinstance(exc, httpx.ConnectTimeout):
                raise _Retry(f"could not connect within {self.timeout_s} s") from None
            raise self._error(
                f"did not answer within {self.timeout_s} s (the time-out is explainer_timeout_s: "
                f"`--set explainer_timeout_s=SECONDS` to wait longer)"
            ) from None
        except httpx.TransportError as exc:  # refused, reset, closed mid-answer
            raise _Retry(f"{type(exc).__name__}: {exc}") from None
        if r.status_code == 429 or r.status_code >= 500:
            raise _Retry(f"HTTP {r.status_code}")
        if r.is_error:
            raise self._error(f"answered HTTP {r.status_code}: {r.text[:200]!r}")
        return r

    def _error(self, what: str) -> AtlasError:
        return AtlasError(f"explainer endpoint {self.url!r} (model {self.model!r}) {what}")

    @property
    def client(self) -> httpx.Client:
        if self._client is None:
            key = os.environ.get(self.api_key_env)
            self._client = httpx.Client(
                base_url=self.url, timeout=self.timeout_s, headers={"Authorization": f"Bearer {key}"} if key else {}
            )
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def __enter__(self) -> Explainer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __getstate__(self) -> dict:
        """Pickled (a Ray worker's copy of the job) without the client: the worker makes its own."""
        return {**self.__dict__, "_client": None}
