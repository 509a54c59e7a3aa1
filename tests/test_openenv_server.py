"""``agentgym serve`` and ``agentgym/Remote-v0``: a real server on 127.0.0.1, driven over HTTP and WebSocket
by our client, a raw WebSocket client and OpenEnv's own client."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import gymnasium as gym
import pytest

import agentgym  # noqa: F401  (registers the environments)
from agentgym.envs.frozenlake import FrozenLakeEnv

for _module in ("fastapi", "uvicorn", "websockets", "httpx"):
    pytest.importorskip(_module, reason=f"agentgym serve needs {_module}: pip install 'agentgym[serve]'")

import httpx  # noqa: E402
from websockets.exceptions import ConnectionClosed  # noqa: E402
from websockets.sync.client import connect  # noqa: E402

from agentgym.integrations.openenv_server import BackgroundServer  # noqa: E402
from agentgym.integrations.remote import RemoteEnv, RemoteEnvError, websocket_url  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
FROZEN = "agentgym/FrozenLake-v0"
DOWN = "<think>go down</think><answer>Down</answer>"


class _TestEnv(FrozenLakeEnv):
    """FrozenLake with two extra responses: 'sleep' takes a second, 'boom' raises inside the environment;
    and a reset with options {"boom": True} raises."""

    def reset(self, *, seed=None, options=None):
        if (options or {}).get("boom"):
            raise RuntimeError("boom while resetting")
        return super().reset(seed=seed, options=options)

    def step(self, action):
        if action == "boom":
            raise ValueError("boom from inside the environment")
        if action == "sleep":
            time.sleep(1.0)
        return super().step(action)


TEST_ENV = "agentgym-test/ServeProbe-v0"
if TEST_ENV not in gym.registry:
    gym.register(id=TEST_ENV, entry_point=_TestEnv)


@pytest.fixture
def server():
    with BackgroundServer(FROZEN, max_sessions=4, idle_timeout=None) as running:
        yield running


def ws(server: BackgroundServer):
    return connect(websocket_url(server.url), open_timeout=10)


def ask(socket, message) -> dict:
    socket.send(message if isinstance(message, (str, bytes)) else json.dumps(message))
    return json.loads(socket.recv(timeout=30))


def active_sessions(url: str) -> int:
    return httpx.get(f"{url}/sessions").json()["active_sessions"]


def wait_for(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def play_side_by_side(remote, env_id: str, seed: int) -> int:
    """Play the local oracle's responses in ``remote`` and in a local env; assert every return is equal."""
    local = gym.make(env_id)
    assert remote.reset(seed=seed) == local.reset(seed=seed)
    done, turns = False, 0
    while not done:
        response = local.unwrapped.oracle_action()
        expected = local.step(response)
        assert remote.step(response) == expected
        done, turns = expected[2] or expected[3], turns + 1
    assert expected[4]["success"]
    local.close()
    return turns


# ----- HTTP -----
def test_http_endpoints_follow_openenv(server):
    url = server.url
    assert httpx.get(f"{url}/health").json() == {"status": "healthy"}
    schema = httpx.get(f"{url}/schema").json()
    assert set(schema) == {"action", "observation", "state"}
    assert schema["action"]["properties"]["response"]["type"] == "string"
    assert {"text", "info", "done", "reward"} <= set(schema["observation"]["properties"])
    assert httpx.get(f"{url}/metadata").json()["name"] == FROZEN

    local = gym.make(FROZEN)
    obs, info = local.reset(seed=5)
    reset = httpx.post(f"{url}/reset", json={"seed": 5}).json()
    assert set(reset) == {"observation", "reward", "done"}
    assert reset["reward"] is None and reset["done"] is False
    assert reset["observation"]["text"] == obs and reset["observation"]["info"] == info
    assert "instructions" in reset["observation"]["info"]
    session = reset["observation"]["session_id"]

    turns = 0
    while True:
        response = local.unwrapped.oracle_action()
        obs, reward, terminated, truncated, info = local.step(response)
        answer = httpx.post(f"{url}/step", json={"action": {"response": response}, "session_id": session})
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["observation"]["text"] == obs and body["reward"] == reward
        assert body["done"] == (terminated or truncated) and body["observation"]["info"] == info
        turns += 1
        if body["done"]:
            break
    state = httpx.get(f"{url}/state", params={"session_id": session}).json()
    assert state["step_count"] == turns and state["done"] is True and state["env_id"] == FROZEN
    assert httpx.get(f"{url}/state").json()["episode_id"] is None  # no session: the state of no episode

    after_end = httpx.post(f"{url}/step", json={"action": {"response": DOWN}, "session_id": session})
    assert after_end.status_code == 409 and "episode is over" in after_end.json()["detail"]
    again = httpx.post(f"{url}/reset", json={"seed": 5, "session_id": session}).json()  # same session
    assert (
        again["observation"]["session_id"] == session
        and again["observation"]["text"] == reset["observation"]["text"]
    )

    assert httpx.post(f"{url}/close", json={"session_id": session}).json()["closed"] is True
    assert active_sessions(url) == 0


def test_http_bad_input_gets_clear_errors(server):
    url = server.url
    session = httpx.post(f"{url}/reset", json={}).json()["observation"]["session_id"]
    headers = {"content-type": "application/json"}

    malformed = httpx.post(f"{url}/step", content=b'{"action": ', headers=headers)
    assert malformed.status_code == 422 and "json" in malformed.text.lower()
    no_session = httpx.post(f"{url}/step", json={"action": {"response": DOWN}})
    assert no_session.status_code == 400 and "session_id" in no_session.json()["detail"]
    unknown = httpx.post(f"{url}/step", json={"action": {"response": DOWN}, "session_id": "nope"})
    assert unknown.status_code == 404 and "unknown session_id 'nope'" in unknown.json()["detail"]
    assert httpx.get(f"{url}/state", params={"session_id": "nope"}).status_code == 404
    assert httpx.post(f"{url}/reset", json={"session_id": "nope"}).status_code == 404
    wrong_type = httpx.post(f"{url}/step", json={"action": {"response": 7}, "session_id": session})
    assert wrong_type.status_code == 422 and "response" in wrong_type.json()["detail"]
    extra_field = httpx.post(
        f"{url}/step", json={"action": {"response": DOWN, "x": 1}, "session_id": session}
    )
    assert extra_field.status_code == 422
    assert httpx.post(f"{url}/reset", json={"seed": -1}).status_code == 422
    huge = httpx.post(f"{url}/step", content=b'{"action": "' + b"x" * (2 << 20) + b'"}', headers=headers)
    assert huge.status_code == 413 and "limit" in huge.json()["detail"]

    # the session and the server survived all of it
    ok = httpx.post(f"{url}/step", json={"action": {"response": DOWN}, "session_id": session})
    assert ok.status_code == 200 and ok.json()["observation"]["info"]["action_valid"]
    assert httpx.get(f"{url}/health").json() == {"status": "healthy"}


# ----- WebSocket -----
def test_two_websocket_sessions_are_isolated(server):
    with ws(server) as a, ws(server) as b:
        assert active_sessions(server.url) == 2
        first_a = ask(a, {"type": "reset", "data": {"seed": 1}})
        first_b = ask(b, {"type": "reset", "data": {"seed": 2}})
        assert first_a["type"] == first_b["type"] == "observation"
        assert first_a["data"]["observation"]["session_id"] != first_b["data"]["observation"]["session_id"]
        for _ in range(2):
            assert ask(a, {"type": "step", "data": {"response": DOWN}})["type"] == "observation"
        assert ask(a, {"type": "state"})["data"]["step_count"] == 2
        assert ask(b, {"type": "state"})["data"]["step_count"] == 0
        for seed, first in ((1, first_a), (2, first_b)):
            obs, info = gym.make(FROZEN).reset(seed=seed)
            assert (
                first["data"]["observation"]["text"] == obs and first["data"]["observation"]["info"] == info
            )
    assert wait_for(lambda: active_sessions(server.url) == 0)


def test_websocket_bad_messages_get_errors_and_the_session_goes_on(server):
    with ws(server) as socket:
        cases = [
            ("{not json", "INVALID_JSON"),
            ("[1, 2]", "VALIDATION_ERROR"),
            ({"type": "dance"}, "UNKNOWN_TYPE"),
            ({"type": "step", "data": {"response": DOWN}}, "EXECUTION_ERROR"),  # before any reset
            ({"type": "reset", "data": {"seed": "zero"}}, "VALIDATION_ERROR"),
            ({"type": "reset", "data": "seed=1"}, "VALIDATION_ERROR"),
        ]
        for message, code in cases:
            answer = ask(socket, message)
            assert answer["type"] == "error" and answer["data"]["code"] == code, (message, answer)
            assert answer["data"]["message"]
        assert ask(socket, {"type": "reset", "data": {"seed": 0, "unknown_key": 1}})["type"] == "observation"
        for message in (
            {"type": "step", "data": {"response": 3}},
            {"type": "step", "data": {"text": DOWN}},
            {"type": "step"},
            json.dumps({"type": "step", "data": {"response": "x" * (2 << 20)}}),  # over the 1 MiB limit
        ):
            answer = ask(socket, message)
            assert answer["type"] == "error" and answer["data"]["code"] == "VALIDATION_ERROR", answer
        # a long response within the message limit reaches the environment, which penalises it
        long = ask(socket, {"type": "step", "data": {"response": "x" * 40_000}})["data"]
        assert long["reward"] < 0 and not long["observation"]["info"]["format_ok"]
        # binary frames are read as text
        binary = ask(socket, json.dumps({"type": "state"}).encode())
        assert binary["type"] == "state" and binary["data"]["step_count"] == 1
        # play to the end, then one step too many
        local = gym.make(FROZEN)
        local.reset(seed=0)
        local.step("x" * 40_000)
        done = False
        while not done:
            data = ask(socket, {"type": "step", "data": {"response": local.unwrapped.oracle_action()}})[
                "data"
            ]
            local.step(local.unwrapped.oracle_action())
            done = data["done"]
        after = ask(socket, {"type": "step", "data": {"response": DOWN}})
        assert after["data"]["code"] == "EXECUTION_ERROR" and "episode is over" in after["data"]["message"]
        assert ask(socket, {"type": "reset", "data": {"seed": 3}})["type"] == "observation"
    assert httpx.get(f"{server.url}/health").json() == {"status": "healthy"}


def test_an_oversized_frame_drops_only_that_connection(server):
    with ws(server) as socket:
        ask(socket, {"type": "reset", "data": {"seed": 0}})
        socket.send("x" * (17 << 20))  # beyond the transport's limit: the connection closes unread
        with pytest.raises(ConnectionClosed) as closed:
            socket.recv(timeout=10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009  # "message too big"
    assert wait_for(lambda: active_sessions(server.url) == 0)
    with ws(server) as other:
        assert ask(other, {"type": "reset", "data": {"seed": 0}})["type"] == "observation"


def test_environment_exceptions_and_slow_steps_stay_in_their_session():
    with BackgroundServer(TEST_ENV, max_sessions=4, idle_timeout=None) as server:
        with ws(server) as slow, ws(server) as fast:
            ask(slow, {"type": "reset", "data": {"seed": 0}})
            boom = ask(slow, {"type": "step", "data": {"response": "boom"}})
            assert boom["data"]["code"] == "EXECUTION_ERROR" and "boom from inside" in boom["data"]["message"]

            slow.send(json.dumps({"type": "step", "data": {"response": "sleep"}}))  # one second in its thread
            time.sleep(0.1)
            start = time.monotonic()
            assert ask(fast, {"type": "reset", "data": {"seed": 1}})["type"] == "observation"
            assert ask(fast, {"type": "step", "data": {"response": DOWN}})["type"] == "observation"
            assert httpx.get(f"{server.url}/health").status_code == 200
            assert time.monotonic() - start < 0.5, "another session's slow step blocked this one"
            assert json.loads(slow.recv(timeout=10))["type"] == "observation"

            failed_reset = ask(fast, {"type": "reset", "data": {"options": {"boom": True}}})
            assert failed_reset["data"]["code"] == "EXECUTION_ERROR" and "boom while resetting" in str(
                failed_reset
            )
            assert ask(fast, {"type": "reset", "data": {"seed": 2}})["type"] == "observation"
        # an HTTP session whose first reset fails is closed: nobody received its id
        failed = httpx.post(f"{server.url}/reset", json={"options": {"boom": True}})
        assert failed.status_code == 500 and "boom while resetting" in failed.json()["detail"]
        assert wait_for(lambda: active_sessions(server.url) == 0)


def test_session_limit(server):
    envs = [gym.make("agentgym/Remote-v0", url=server.url) for _ in range(4)]
    with pytest.raises(RemoteEnvError) as refused:
        RemoteEnv(server.url)
    assert refused.value.code == "CAPACITY_REACHED" and "4/4" in str(refused.value), refused.value
    with ws(server) as socket:
        answer = json.loads(socket.recv(timeout=10))  # sent as soon as the connection opens
        assert answer["data"]["code"] == "CAPACITY_REACHED" and answer["data"]["max_sessions"] == 4
    full = httpx.post(f"{server.url}/reset", json={})
    assert full.status_code == 503 and "capacity" in full.json()["detail"]
    envs.pop().close()
    assert wait_for(lambda: active_sessions(server.url) == 3)
    envs.append(gym.make("agentgym/Remote-v0", url=server.url))  # the freed slot is usable
    for env in envs:
        env.close()
    assert wait_for(lambda: active_sessions(server.url) == 0)


def test_a_killed_client_frees_its_session(server):
    script = textwrap.dedent(
        f"""
        import gymnasium as gym, time, agentgym
        env = gym.make("agentgym/Remote-v0", url={server.url!r})
        env.reset(seed=0)
        env.step({DOWN!r})
        print("playing", flush=True)
        time.sleep(600)
        """
    )
    client = subprocess.Popen(
        [sys.executable, "-c", script],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        assert client.stdout is not None and client.stdout.readline().strip() == "playing"
        assert active_sessions(server.url) == 1
        os.kill(client.pid, signal.SIGKILL)  # mid-episode, no close message
        client.wait(timeout=10)
    finally:
        if client.poll() is None:
            os.kill(client.pid, signal.SIGKILL)
            client.wait()
    assert wait_for(lambda: active_sessions(server.url) == 0), "the vanished client's session leaked"


def test_idle_sessions_are_reaped_with_a_reason():
    with BackgroundServer(FROZEN, max_sessions=2, idle_timeout=0.3) as server:
        remote = RemoteEnv(server.url)
        remote.reset(seed=0)
        httpx.post(f"{server.url}/reset", json={"seed": 0})
        assert active_sessions(server.url) == 2
        assert wait_for(lambda: active_sessions(server.url) == 0, timeout=5)
        with pytest.raises(RemoteEnvError) as expired:
            remote.step(DOWN)
        assert expired.value.code == "SESSION_ERROR" and "without a message" in str(expired.value)
        remote.close()


# ----- the Gymnasium client -----
@pytest.mark.parametrize("env_id", [FROZEN, "agentgym/Sokoban-v0"])
def test_remote_env_plays_like_the_local_env(env_id):
    from gymnasium.utils.env_checker import check_env

    with BackgroundServer(env_id, max_sessions=3, idle_timeout=None) as server:
        remote = gym.make("agentgym/Remote-v0", url=server.url.replace("http://", "ws://"))
        check_env(remote.unwrapped)
        for seed in range(3):
            assert play_side_by_side(remote, env_id, seed) >= 1
        # seeds: the same seed twice gives the same episode; an unseeded reset continues the RNG as locally
        local = gym.make(env_id)
        assert remote.reset(seed=7) == local.reset(seed=7)
        assert remote.reset() == local.reset()
        assert remote.unwrapped.session_id in server.env_server.sessions
        remote.close()
        remote.close()  # twice is fine
        assert wait_for(lambda: active_sessions(server.url) == 0)
        with pytest.raises(RemoteEnvError, match="closed"):
            remote.unwrapped.state()


def test_remote_env_bad_urls():
    with pytest.raises(ValueError, match="url must look like"):
        RemoteEnv("ftp://127.0.0.1:1")
    with pytest.raises(ConnectionError, match="cannot reach"):
        RemoteEnv("http://127.0.0.1:9", connect_timeout=2)
    assert websocket_url("https://example.org/env/") == "wss://example.org/env/ws"
    assert websocket_url("127.0.0.1:8000") == "ws://127.0.0.1:8000/ws"


def test_openenv_client_drives_the_server(server):
    openenv_core = pytest.importorskip("openenv.core", reason="OpenEnv's client: pip install openenv-core")
    local = gym.make(FROZEN)
    with openenv_core.GenericEnvClient(base_url=server.url).sync() as client:
        for seed in (0, 4):
            obs, info = local.reset(seed=seed)
            result = client.reset(seed=seed)
            assert result.observation["text"] == obs and result.observation["info"] == info
            assert result.done is False
            while not result.done:
                response = local.unwrapped.oracle_action()
                obs, reward, terminated, truncated, info = local.step(response)
                result = client.step({"response": response})
                assert (result.observation["text"], result.reward) == (obs, reward)
                assert result.done == (terminated or truncated)
            assert result.observation["info"]["success"]
            assert client.state()["step_count"] >= 1
        with pytest.raises(RuntimeError, match="VALIDATION_ERROR"):
            client.step({"response": 12})
        assert client.state()["done"] is True  # the refused step changed nothing
    assert wait_for(lambda: active_sessions(server.url) == 0)


def test_threads_share_one_server(server):
    """Four Remote-v0 clients in threads, one seed each: every episode equals the local one."""
    errors: list[BaseException] = []

    def play(seed: int) -> None:
        try:
            remote = RemoteEnv(server.url)
            play_side_by_side(remote, FROZEN, seed)
            remote.close()
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=play, args=(seed,)) for seed in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors


@pytest.mark.slow
def test_agentgym_eval_through_remote_env_equals_local(tiny_lm, tmp_path):
    """agentgym's own eval, an hf: policy, through agentgym/Remote-v0: the same episodes as locally."""
    from agentgym.eval.runner import evaluate

    model, tokenizer = tiny_lm
    model.save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    common = {"progress": False, "diagnostics": False, "policy_kwargs": {"max_new_tokens": 16}}
    policy = f"hf:{tmp_path / 'model'}"
    local = evaluate(FROZEN, policy, 3, out=tmp_path / "local", **common)
    with BackgroundServer(FROZEN, max_sessions=3, idle_timeout=None) as server:  # eval plays 3 at once
        remote = evaluate(
            "agentgym/Remote-v0", policy, 3, out=tmp_path / "remote", env_kwargs={"url": server.url}, **common
        )
        assert active_sessions(server.url) == 0
    assert remote["mean_return"] == local["mean_return"]

    def records(run: str) -> list[dict]:
        return [json.loads(line) for line in (tmp_path / run / "trajectories.jsonl").read_text().splitlines()]

    for mine, theirs in zip(records("local"), records("remote"), strict=True):
        assert mine["messages"] == theirs["messages"] and mine["rewards"] == theirs["rewards"]


def test_oracle_and_random_policies_need_the_local_env(server):
    from agentgym.errors import UsageError

    remote = RemoteEnv(server.url)
    remote.reset(seed=0)
    with pytest.raises(UsageError, match="model policy"):
        remote.oracle_action()
    with pytest.raises(UsageError, match="model policy"):
        remote.random_action()
    remote.close()


# ----- the command line -----
def _cli(*args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "agentgym.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        **kwargs,
    )


def test_cli_serve_runs_a_server():
    proc = _cli("serve", "--env", "agentgym/Sokoban-v0", "--port", "0", "--max-sessions", "2")
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("serving agentgym/Sokoban-v0 on http://127.0.0.1:"), line
        url = line.split(" on ")[1].split()[0]
        assert wait_for(lambda: httpx.get(f"{url}/health").status_code == 200)
        remote = gym.make("agentgym/Remote-v0", url=url)
        play_side_by_side(remote, "agentgym/Sokoban-v0", seed=11)
        remote.close()
        assert httpx.get(f"{url}/sessions").json() == {"active_sessions": 0, "max_sessions": 2} or wait_for(
            lambda: active_sessions(url) == 0
        )
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--env", "agentgym/Nope-v0"], "unknown environment 'agentgym/Nope-v0'"),
        (["--env", FROZEN, "--env-kwargs", "{oops"], "--env-kwargs is not valid JSON"),
        (["--env", FROZEN, "--env-kwargs", '{"size": 1}'], "cannot build agentgym/FrozenLake-v0"),
        (["--env", FROZEN, "--max-sessions", "0"], "--max-sessions must be at least 1"),
        (["--env", FROZEN, "--port", "70000"], "--port must be between 0 and 65535"),
    ],
)
def test_cli_serve_bad_input(args, message):
    proc = _cli("serve", *args)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2 and f"agentgym: error: {message}" in err, err


def test_cli_serve_port_in_use(server):
    port = server.url.rsplit(":", 1)[1]
    proc = _cli("serve", "--env", FROZEN, "--port", port)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2 and f"cannot listen on 127.0.0.1:{port}" in err, err


def test_import_agentgym_leaves_the_server_dependencies_alone():
    code = (
        "import sys, agentgym, agentgym.cli; agentgym.cli.build_parser(); "
        "print([m for m in ('fastapi', 'uvicorn', 'websockets', 'starlette') if m in sys.modules])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stderr
