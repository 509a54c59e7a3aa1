"""WebShop driven through a real Chromium: pages, actions, the oracle, parallel envs, a browser crash.

One browser stays warm for the whole module (the ``warm_browser`` fixture holds it), so each test pays
only for its page loads.
"""

from __future__ import annotations

import http.server
import threading

import gymnasium as gym
import psutil
import pytest

import agentgym  # noqa: F401  (registers the envs)
from agentgym.envs.webshop.browser import BrowserHost
from agentgym.envs.webshop.chromium import find_chromium
from agentgym.envs.webshop.server import ShopServer

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        find_chromium() is None,
        reason="no Chromium found (apt-get install chromium, or set AGENTGYM_CHROMIUM)",
    ),
]


@pytest.fixture(scope="module", autouse=True)
def warm_browser():
    host = BrowserHost.acquire()
    yield host
    BrowserHost.release()


def make(**kwargs):
    return gym.make("agentgym/WebShop-v0", **kwargs).unwrapped


def answer(command: str) -> str:
    return f"<think>.</think><answer>{command}</answer>"


def run_oracle(env, **reset_kwargs) -> tuple[float, dict, int]:
    env.reset(**reset_kwargs)
    total, steps, done, info = 0.0, 0, False, {}
    while not done:
        _, reward, terminated, truncated, info = env.step(env.oracle_action())
        assert info["format_ok"] and info["action_valid"], info
        total, steps, done = total + reward, steps + 1, terminated or truncated
    return total, info, steps


def test_oracle_wins_generated_goals_of_both_splits():
    for split in ("test", "train"):
        env = make(split=split)
        try:
            for seed in range(2):
                reward, info, _ = run_oracle(env, seed=seed)
                assert info["success"] and reward == pytest.approx(1.0)
                assert info["purchase"]["asin"] == info["goal"]["asin"]
                assert info["purchase"]["options"] == info["goal"]["options"]
                assert info["reward_parts"]["r_type"] == 1.0
                assert info["title_tagger"] == env.tagger.name == info["reward_parts"]["title_tagger"]
                assert info["grader"] == f"webshop-get_reward/{env.tagger.name}"
        finally:
            env.close()


def test_title_tagger_is_chosen_and_reported():
    env = make(title_tagger="lexicon")
    try:
        reward, info, _ = run_oracle(env, seed=1)
        assert info["success"] and info["title_tagger"].startswith("lexicon:lemminflect-")
    finally:
        env.close()
    with pytest.raises((ImportError, OSError), match="spacy"):
        make(title_tagger="no_such_spacy_model_xyz")


def _real_goal_indices(env) -> list[int]:
    """Goals whose target the instruction's search puts on page 1, on a later page, and not in the top 50."""
    engine, picked = env.shop.search, []
    wanted: dict[str, int | None] = {"first": None, "later": None, "missing": None}
    for index, goal in enumerate(env.goal_list):
        ranked = engine.search(goal.instruction.lower())
        kind = "missing" if goal.asin not in ranked else "first" if ranked.index(goal.asin) < 10 else "later"
        if wanted[kind] is None and (kind != "first" or goal.options):
            wanted[kind] = index
            picked.append(index)
        if all(v is not None for v in wanted.values()):
            break
    assert len(picked) == 3, wanted
    return picked


@pytest.mark.data
def test_oracle_wins_real_goals(shared_data):
    env = make(data_dir=str(shared_data / "webshop"))
    try:
        assert len(env.goal_list) == 500
        for index in _real_goal_indices(env):
            reward, info, steps = run_oracle(env, options={"goal_index": index})
            assert info["success"] and reward == pytest.approx(1.0), info
            assert steps <= env.max_turns
            goal = env.goal_list[index]
            assert info["goal"]["instruction"] == goal.instruction
            assert info["goal"]["price_upper"] == goal.price_upper
            assert info["purchase"]["price"] <= goal.price_upper
        assert run_oracle(env, seed=0)[1]["success"]
    finally:
        env.close()


@pytest.mark.data
def test_oracle_wins_real_human_goals(shared_data):
    env = make(data_dir=str(shared_data / "webshop"), goals="human")
    try:
        for index in range(0, len(env.goal_list), 4):
            assert run_oracle(env, options={"goal_index": index})[1]["success"]
    finally:
        env.close()


def test_pages_and_observation():
    env = make()
    try:
        obs, info = env.reset(seed=5)
        assert "Instruction:" in obs and env.goal.instruction in obs
        assert "[button] Search [button_]" in obs and "search[<your query>]" in obs
        assert "search[" in info["instructions"] and "click[" in info["instructions"]
        obs, *_ = env.step(answer("search[black]"))
        assert "Page 1 (1-10) of 50 total results" in obs
        assert "[button] Back to Search [button_]" in obs and "[button] Next > [button_]" in obs
        assert "< Prev" not in obs
        asins = [c for c in env._page["clickables"] if c.startswith("G")]
        assert len(asins) == 10
        obs, *_ = env.step(answer("click[Next >]"))
        assert "Page 2 (11-20) of 50 total results" in obs and "[button] < Prev [button_]" in obs
        product_with_options = next(a for a in asins if env.catalogue.by_asin[a].options)
        obs, *_ = env.step(answer("click[< Prev]"))
        obs, *_ = env.step(answer(f"click[{product_with_options.lower()}]"))  # case does not matter
        product = env.catalogue.by_asin[product_with_options]
        assert product.title in obs and f"Price: {product.price_tag}" in obs
        for button in ("Description", "Features", "Reviews", "Buy Now", "< Prev", "Back to Search"):
            assert f"[button] {button} [button_]" in obs
        name, values = next(iter(product.options.items()))
        obs, *_ = env.step(answer(f"click[{values[0]}]"))
        assert f"[clicked button] {values[0]} [clicked button_]" in obs
        obs, *_ = env.step(answer("click[Features]"))
        assert "Features" in obs and product.bullet_points[0][:20] in obs
        obs, *_ = env.step(answer("click[< Prev]"))  # back on the item page, the option still chosen
        assert f"[clicked button] {values[0]} [clicked button_]" in obs
        obs, *_ = env.step(answer("click[< Prev]"))  # the product is marked as viewed in the results
        assert f"[clicked button] {product_with_options} [clicked button_]" in obs
    finally:
        env.close()


def test_invalid_actions_change_nothing():
    env = make()
    try:
        env.reset(seed=1)
        cases = [
            ("click[Buy Now]", "no clickable element"),
            ("click[Search]", "search[your query]"),
            ("search[   ]", "empty"),
            ("jump[over]", "Unknown action"),
        ]
        for command, why in cases:
            before, url = env._render_state(), env._page["url"]
            obs, reward, terminated, truncated, info = env.step(answer(command))
            assert info["format_ok"] and not info["action_valid"]
            assert reward == pytest.approx(env.format_penalty) and not terminated
            assert why in obs and env._render_state() == before and env._page["url"] == url
        env.step(answer("search[shirt]"))
        before = env._render_state()
        obs, _, _, _, info = env.step(answer("search[shoes]"))
        assert not info["action_valid"] and "no search bar" in obs and env._render_state() == before
    finally:
        env.close()


def test_turn_limit_ends_the_episode_with_the_goal_in_info():
    env = make(max_turns=2)
    try:
        env.reset(seed=2)
        _, _, terminated, truncated, info = env.step(answer("search[shirt]"))
        assert not (terminated or truncated) and "goal" not in info
        _, reward, terminated, truncated, info = env.step(answer("click[Back to Search]"))
        assert truncated and not terminated and reward == 0.0
        assert info["goal"]["asin"] == env.goal.asin and info["purchase"] is None and not info["success"]
    finally:
        env.close()


def test_a_wrong_purchase_gets_a_partial_reward():
    env = make()
    try:
        env.reset(options={"goal_index": 0})
        env.step(answer(f"search[{env.goal.instruction}]"))
        other = next(c for c in env._page["clickables"] if c.startswith("G") and c != env.goal.asin)
        env.step(answer(f"click[{other}]"))
        _, reward, terminated, _, info = env.step(answer("click[Buy Now]"))
        assert terminated and not info["success"] and 0.0 <= reward < 1.0
        assert info["purchase"]["asin"] == other and info["reward"] == reward
        assert "Thank you for shopping" in env._render_state()
    finally:
        env.close()


def test_several_envs_in_one_thread_keep_their_own_sessions():
    envs = [make() for _ in range(3)]
    try:
        for seed, env in enumerate(envs):
            env.reset(seed=seed)
        assert len({env.sid for env in envs}) == 3
        done = [False] * 3
        while not all(done):
            for i, env in enumerate(envs):  # interleave the episodes step by step
                if not done[i]:
                    _, _, terminated, truncated, info = env.step(env.oracle_action())
                    done[i] = terminated or truncated
                    if done[i]:
                        assert info["success"] and info["goal"]["asin"] == env.goal.asin
    finally:
        for env in envs:
            env.close()


def test_envs_in_several_threads():
    results, errors = [], []

    def worker(seed: int) -> None:
        env = make()
        try:
            results.append(run_oracle(env, seed=seed)[1]["success"])
        except Exception as exc:  # reported below: an assert in a thread would be lost
            errors.append(exc)
        finally:
            env.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not errors and results == [True] * 3


def _browser_processes() -> list[psutil.Process]:
    """Chromium's main processes under this test process (its renderers have a --type= flag)."""
    found = []
    for child in psutil.Process().children(recursive=True):
        try:
            command = child.cmdline()
        except psutil.Error:
            continue
        if command and "chrom" in command[0].lower() and not any(a.startswith("--type=") for a in command):
            found.append(child)
    return found


def _driver_processes() -> list[psutil.Process]:
    """Playwright's driver: the Node.js child of this process started with ``run-driver``."""
    found = []
    for child in psutil.Process().children():
        try:
            if "run-driver" in child.cmdline():
                found.append(child)
        except psutil.Error:
            continue
    return found


def _kill(victims: list[psutil.Process]) -> None:
    for process in victims:
        process.kill()
    psutil.wait_procs(victims, timeout=10)


def _assert_aborted_then_recovered(env, error: str, launches: int, driver_launches: int) -> None:
    obs, reward, terminated, truncated, info = env.step(env.oracle_action())
    assert truncated and not terminated and reward == 0.0
    assert info["aborted"] and error in info["error"] and not info["success"], info
    assert "aborted" in obs and info["goal"]["asin"] == env.goal.asin
    with pytest.raises(RuntimeError, match="episode is over"):
        env.step(env.oracle_action())
    assert env.host.launches == launches + 1 and env.host.driver_launches == driver_launches
    assert env.host.alive()
    env.reset(seed=4)  # the next reset and steps work
    _, _, _, _, info = env.step(env.oracle_action())
    assert info["action_valid"] and "aborted" not in info
    reward, info, _ = run_oracle(env, seed=4)
    assert info["success"] and not info["aborted"]


def test_a_browser_crash_aborts_the_episode_and_the_next_one_works():
    env = make()
    try:
        env.reset(seed=4)
        env.step(env.oracle_action())
        launches, driver_launches = env.host.launches, env.host.driver_launches
        victims = _browser_processes()
        assert victims, "no Chromium process found to kill"
        _kill(victims)
        # only the browser died: the driver is kept
        _assert_aborted_then_recovered(env, "browser crashed", launches, driver_launches)
        assert len(_driver_processes()) == 1
    finally:
        env.close()


def test_a_dead_playwright_driver_aborts_the_episode_and_both_are_relaunched():
    env = make()
    try:
        env.reset(seed=4)
        env.step(env.oracle_action())
        launches, driver_launches = env.host.launches, env.host.driver_launches
        victims, old_browsers = _driver_processes(), _browser_processes()
        assert len(victims) == 1, "expected one Playwright driver among this process's children"
        _kill(victims)
        assert env.host.browser_alive() and not env.host.driver_alive()  # what fooled the old check
        _assert_aborted_then_recovered(env, "driver died", launches, driver_launches + 1)
        assert [p.pid for p in _driver_processes()] != [victims[0].pid]
        _, lingering = psutil.wait_procs(old_browsers, timeout=10)
        assert not lingering, "the old Chromium outlived its driver"
    finally:
        env.close()


def test_a_dead_driver_between_episodes_is_relaunched_by_reset():
    env = make()
    try:
        assert run_oracle(env, seed=0)[1]["success"]
        _kill(_driver_processes())
        assert run_oracle(env, seed=1)[1]["success"]  # reset noticed, relaunched and went on
    finally:
        env.close()


def test_tabs_are_renewed_without_piling_up(monkeypatch):
    monkeypatch.setattr("agentgym.envs.webshop.env.TAB_EPISODES", 2)
    envs = [make(max_turns=1), make(max_turns=1)]
    try:
        host = envs[0].host
        contexts = len(host.browser.contexts)
        tabs_seen = []
        for episode in range(6):
            for env in envs:
                env.reset(seed=episode)
                env.step(answer("search[shirt]"))  # one page load, then the turn limit ends it
                if all(env.tab is not t for t in tabs_seen):
                    tabs_seen.append(env.tab)
                assert env.tab.episodes == episode % 2 + 1
                assert env.tab.context.pages == [env.tab.page] and not env.tab.page.is_closed()
            assert len(host.browser.contexts) == contexts  # each renewal closed the context it replaced
        assert len(tabs_seen) == 2 * 3  # a fresh tab every 2 episodes per env
        assert all(t.page.is_closed() for t in tabs_seen if all(t is not e.tab for e in envs))
    finally:
        for env in envs:
            env.close()
    assert len(host.browser.contexts) == contexts - 2


def test_old_pages_do_not_pile_up_in_the_renderer():
    env = make(max_turns=2)
    try:
        env.reset(seed=0)
        devtools = env.host.call(env.tab.context.new_cdp_session(env.tab.page))
        env.host.call(devtools.send("Performance.enable"))
        documents = []
        for seed in range(1, 6):  # three page loads per episode, all in the same tab
            env.reset(seed=seed)
            env.step(answer("search[shirt]"))
            env.step(answer("click[Next >]"))
            metrics = env.host.call(devtools.send("Performance.getMetrics"))["metrics"]
            documents.append(next(m["value"] for m in metrics if m["name"] == "Documents"))
        assert env.tab.episodes == 6  # no renewal in between: the garbage collection did it
        assert max(documents) <= 4 and documents[-1] <= documents[0], documents  # without it: 3 more each
    finally:
        env.close()


def test_the_browser_reaches_only_the_shop():
    # a server on another loopback address (allowed as a test target) that the browser must not reach
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"reached")

        def log_message(self, *args):
            pass

    outside = http.server.HTTPServer(("127.0.0.2", 0), Handler)
    threading.Thread(target=outside.serve_forever, daemon=True).start()
    env = make()
    try:
        env.reset(seed=0)
        fetch = "url => fetch(url).then(r => r.text()).catch(() => 'blocked')"
        shop_url = f"{env.server.base_url}/{env.sid}"
        assert "Instruction" in env.host.call(env.tab.page.evaluate(fetch, shop_url))
        for url in (f"http://127.0.0.2:{outside.server_port}/", "http://shop.invalid/"):
            assert env.host.call(env.tab.page.evaluate(fetch, url)) == "blocked"
    finally:
        env.close()
        outside.shutdown()
        outside.server_close()


def test_server_and_browser_are_shared_and_stop_with_the_last_env():
    a, b = make(), make()
    try:
        assert a.server is b.server and a.host is b.host and a.tab.context is not b.tab.context
    finally:
        a.close()
        a.close()  # closing twice is harmless
        assert ShopServer._instance is not None  # b still uses it
        b.close()
    assert ShopServer._instance is None
    c = make()  # a new server starts for the next env
    try:
        assert ShopServer._instance is c.server
        assert run_oracle(c, seed=0)[1]["success"]
    finally:
        c.close()


def test_a_forked_child_starts_its_own_browser_and_server():
    import multiprocessing

    parent = make()
    try:
        parent.reset(seed=0)
        context = multiprocessing.get_context("fork")
        with context.Pool(1) as pool:
            assert pool.apply(_oracle_in_child, (3,)) is True
        assert run_oracle(parent, seed=1)[1]["success"]  # the parent's env is untouched
    finally:
        parent.close()


def _oracle_in_child(seed: int) -> bool:
    env = make()
    try:
        return bool(run_oracle(env, seed=seed)[1]["success"])
    finally:
        env.close()
