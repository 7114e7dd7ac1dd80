"""The explainer client (ingest/explainer.py) against real HTTP servers on loopback: one reused
connection, retries with backoff on 503 / 429 / refused connections, no retry on a 4xx, and a clear
error when the server hangs past the time-out."""

from __future__ import annotations

import pickle
import socket
import threading
import time
from http.server import ThreadingHTTPServer

import pytest

from atlas.errors import AtlasError
from atlas.lens.describe import chat_request, parse_chat_reply, summarize
from ingest.explainer import Explainer
from tests.factories import JsonHandler

SUMMARY = summarize(
    [{"target_token": " bank", "source_token": " river", "offset": -2, "snippet": "x", "outputs": [" shore"]}] * 3,
    [((0, 0, 17, 0), 3)],
    {(0, 17): "water words"},
)
REPLY = {"choices": [{"message": {"role": "assistant", "content": " river banks\n"}}]}
HANG = None  # an answer that never comes


class _Handler(JsonHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: a reused client sends every request on one connection

    def do_POST(self):
        server = self.server
        server.seen.append((self.path, self.read_json(), self.client_address))
        answer = server.answer(len(server.seen))
        if answer is HANG:
            server.release.wait(30)
            return
        status, payload = answer
        self.reply_json(status, payload)


@pytest.fixture
def chat():
    """Factory: answer(n) -> (status, JSON) or HANG for the n-th request (1-based) -> (base url, requests seen)."""
    servers = []

    def start(answer):
        server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        server.daemon_threads = True
        server.answer, server.seen, server.release = answer, [], threading.Event()
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/v1", server.seen

    yield start
    for server in servers:
        server.release.set()
        server.shutdown()
        server.server_close()


def test_describes_over_one_reused_connection(chat, monkeypatch):
    url, seen = chat(lambda n: (200, REPLY))
    monkeypatch.setenv("ATLAS_EXPLAINER_TEST_KEY", "k1")
    with Explainer(url, "tiny-explainer", api_key_env="ATLAS_EXPLAINER_TEST_KEY") as explainer:
        got = [explainer.describe(SUMMARY) for _ in range(3)]
    assert [g.text for g in got] == ["river banks"] * 3
    assert got[0].prompt == chat_request(SUMMARY, "tiny-explainer").prompt
    assert [(path, body) for path, body, _ in seen] == [
        ("/v1/chat/completions", chat_request(SUMMARY, "tiny-explainer").body)
    ] * 3
    assert len({address for _, _, address in seen}) == 1  # one client, one kept-alive connection


@pytest.mark.parametrize("status", [503, 429])
def test_retries_503_and_429_with_backoff(chat, status):
    url, seen = chat(lambda n: (status, {"error": "busy"}) if n <= 2 else (200, REPLY))
    t0 = time.monotonic()
    text = Explainer(url, "m", retries=3, backoff_s=0.1).describe(SUMMARY).text
    assert text == "river banks" and len(seen) == 3
    assert time.monotonic() - t0 >= 0.1 + 0.2  # waited 0.1 s, then 0.2 s


def test_gives_up_after_the_bounded_retries(chat):
    url, seen = chat(lambda n: (503, {}))
    with pytest.raises(AtlasError, match=r"'m'\) failed 3 times; the last: HTTP 503"):
        Explainer(url, "m", retries=2, backoff_s=0.01).describe(SUMMARY)
    assert len(seen) == 3


def test_retries_a_refused_connection_then_names_it():
    with socket.socket() as s:  # a port no one listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(AtlasError, match="failed 2 times; the last: ConnectError"):
        Explainer(f"http://127.0.0.1:{port}/v1", "m", retries=1, backoff_s=0.01).describe(SUMMARY)


def test_a_client_error_or_a_bad_reply_is_not_retried(chat):
    url, seen = chat(lambda n: (400, {"error": "unknown model"}) if n == 1 else (200, {"choices": []}))
    explainer = Explainer(url, "m", backoff_s=0.01)
    with pytest.raises(AtlasError, match="answered HTTP 400: .*unknown model"):
        explainer.describe(SUMMARY)
    with pytest.raises(AtlasError, match="not a chat-completions reply: the reply has no choices"):
        explainer.describe(SUMMARY)
    assert len(seen) == 2


def test_a_hanging_server_is_a_clear_time_out_error(chat):
    url, seen = chat(lambda n: HANG)
    t0 = time.monotonic()
    with pytest.raises(AtlasError, match=r"did not answer within 0.3 s .*explainer_timeout_s"):
        Explainer(url, "m", timeout_s=0.3, backoff_s=0.01).describe(SUMMARY)
    assert len(seen) == 1 and time.monotonic() - t0 < 5  # not retried: a hang is not waited out again


def test_pickled_without_its_client(chat):
    """A Ray worker gets the job pickled: the explainer travels without its connection and makes its own."""
    url, seen = chat(lambda n: (200, REPLY))
    explainer = Explainer(url, "m")
    explainer.describe(SUMMARY)
    copy = pickle.loads(pickle.dumps(explainer))
    assert copy._client is None and copy.describe(SUMMARY).text == "river banks" and len(seen) == 2
    explainer.close()
    copy.close()


def test_reply_parsing_is_pure():
    assert parse_chat_reply(REPLY) == "river banks"
    for bad in ({}, {"choices": []}, {"choices": [{"message": {}}]}, [], {"choices": [{"message": {"content": None}}]}):
        with pytest.raises(ValueError):
            parse_chat_reply(bad)
