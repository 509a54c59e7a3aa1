"""The openai: policy against a small real HTTP server on 127.0.0.1 that speaks the chat-completions JSON:
one reply cap for every model policy, finish_reason kept per turn, a seed per request when sampling,
retries, and a failed request aborting only its episode. (tests/test_vllm_real.py does the same against
a real vLLM server.)"""

from __future__ import annotations

import inspect
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from agentgym.eval.run_files import TrajectoryLog
from agentgym.eval.runner import evaluate
from agentgym.policies import DEFAULT_MAX_NEW_TOKENS, HFPolicy, OpenAIPolicy, sampling_seed

FROZENLAKE = "agentgym/FrozenLake-v0"
MOVE = "<think>go</think><answer>Right</answer>"


class ChatServer:
    """``/v1/chat/completions`` on 127.0.0.1: answers ``MOVE``, with finish_reason "length" whenever the
    request's ``max_tokens`` is below 8; the first ``fail_first`` requests (or all, with ``always_fail``)
    get HTTP 503. Every request body is kept in ``bodies``."""

    def __init__(self, fail_first: int = 0, always_fail: bool = False, port: int = 0) -> None:
        self.bodies: list[dict] = []
        self.failed = 0
        self.fail_first, self.always_fail = fail_first, always_fail
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - the http.server API
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with lock:
                    owner.bodies.append(body)
                    fail = owner.always_fail or owner.failed < owner.fail_first
                    owner.failed += fail
                if fail:
                    self._send(503, {"error": {"message": "overloaded", "type": "server_error"}})
                    return
                cut = body.get("max_tokens", 10**9) < 8
                self._send(
                    200,
                    {
                        "id": "chatcmpl-1",
                        "object": "chat.completion",
                        "created": 0,
                        "model": body["model"],
                        "choices": [
                            {
                                "index": 0,
                                "finish_reason": "length" if cut else "stop",
                                "message": {"role": "assistant", "content": MOVE},
                            }
                        ],
                        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
                    },
                )

            def _send(self, status: int, payload: dict) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def chat_server() -> Iterator[ChatServer]:
    server = ChatServer()
    yield server
    server.close()


def _eval(url: str, out, episodes: int = 3, **policy_kwargs):
    return evaluate(
        FROZENLAKE,
        f"openai:m@{url}",
        episodes,
        out=out,
        batch_size=episodes,
        progress=False,
        policy_kwargs=policy_kwargs,
    )


def _records(out) -> list[dict]:
    return sorted(TrajectoryLog(out / "trajectories.jsonl").load(), key=lambda r: r["seed"])


def test_model_policies_share_one_reply_cap(chat_server, tmp_path):
    hf_default = inspect.signature(HFPolicy).parameters["max_new_tokens"].default
    openai_default = inspect.signature(OpenAIPolicy).parameters["max_new_tokens"].default
    assert hf_default == openai_default == DEFAULT_MAX_NEW_TOKENS
    _eval(chat_server.url, tmp_path / "default", episodes=1)
    assert {b["max_tokens"] for b in chat_server.bodies} == {DEFAULT_MAX_NEW_TOKENS}
    # the hf: name of the setting works for openai: too, and the API's own name still does
    assert OpenAIPolicy("m", chat_server.url, max_new_tokens=64).max_tokens == 64
    assert OpenAIPolicy("m", chat_server.url, max_tokens=32).max_tokens == 32


def test_finish_reason_is_recorded_per_turn(chat_server, tmp_path):
    summary = _eval(chat_server.url, tmp_path / "cut", max_new_tokens=4)
    records = _records(tmp_path / "cut")
    assert all(r["finish_reason"] == ["length"] * r["turns"] for r in records)
    assert summary["truncated_replies"] == sum(r["turns"] for r in records) > 0
    summary = _eval(chat_server.url, tmp_path / "whole")
    assert all(r["finish_reason"] == ["stop"] * r["turns"] for r in _records(tmp_path / "whole"))
    assert summary["truncated_replies"] == 0


def test_sampling_sends_the_episode_turn_seed(chat_server, tmp_path):
    _eval(chat_server.url, tmp_path / "sampled", episodes=2, temperature=0.7, seed=5)
    seeds = {b["seed"] for b in chat_server.bodies}
    # FrozenLake with this policy plays several turns; each (episode seed, turn) gets its own seed
    expected = {sampling_seed(5, s, t) % 2**63 for s in (0, 1) for t in range(1, 50)}
    assert seeds <= expected and len(seeds) == len(chat_server.bodies)
    chat_server.bodies.clear()
    _eval(chat_server.url, tmp_path / "greedy", episodes=2)
    assert all("seed" not in b for b in chat_server.bodies)


def test_a_failed_request_is_retried(tmp_path):
    server = ChatServer(fail_first=2)
    try:
        summary = _eval(server.url, tmp_path, episodes=1, retries=3)
    finally:
        server.close()
    assert summary["episodes"] == 1 and summary["aborted"] == 0
    assert server.failed == 2 and len(server.bodies) == 2 + _records(tmp_path)[0]["turns"]


def test_an_unreachable_server_aborts_episodes_not_the_eval(tmp_path):
    down = ChatServer(always_fail=True)
    try:
        summary = _eval(down.url, tmp_path, episodes=3, retries=1)
    finally:
        down.close()
    assert summary["aborted"] == 3 and summary["episodes"] == 0
    assert len(down.bodies) == 3 * 2  # each episode's first request, and its one retry
    reasons = [r["abort_reason"] for r in _records(tmp_path)]
    assert all("the policy failed" in r and "503" in r for r in reasons), reasons
    up = ChatServer(
        port=down.server.server_address[1]
    )  # the server is back: a rerun on the same --out plays the aborted episodes
    try:
        summary = _eval(up.url, tmp_path, episodes=3, retries=1)
    finally:
        up.close()
    assert summary["aborted"] == 0 and summary["episodes"] == 3 and summary["episodes_played_now"] == 3


def test_hf_policy_reports_finish_reason(tiny_lm):
    model, tokenizer = tiny_lm
    policy = HFPolicy(model, tokenizer, temperature=1.0, max_new_tokens=3)
    chats = [[{"role": "user", "content": f"Turn {i}"}] for i in range(6)]
    for g in policy.act(chats):
        ended = g.token_ids[-1] == tokenizer.eos_token_id
        assert g.finish_reason == ("stop" if ended else "length")
        assert ended or len(g.token_ids) == 3
