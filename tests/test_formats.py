"""Response formats: parsing, rendering and their round trip, on the tools of real environments."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentgym.formats import (
    FORMATS,
    VARIANTS,
    AnswerFormat,
    PythonCallFormat,
    Tool,
    ToolCallFormat,
    get_format,
    match_tool,
)

MOVE = Tool("move", "Move.", {"direction": "Up, Down, Left or Right"}, "{direction}")
SEARCH = Tool("search", "Search the shop.", {"query": "words"}, "search[{query}]")
CLICK = Tool("click", "Click an element.", {"element": "its text"}, "click[{element}]")
SHOP = (SEARCH, CLICK)


def test_tool_templates_match_and_render():
    assert SEARCH.match("search[red shoes]") == {"query": "red shoes"}
    assert SEARCH.match("click[x]") is None
    assert match_tool("click[Buy Now]", SHOP) == (CLICK, {"element": "Buy Now"})
    assert match_tool("jump", SHOP) is None
    assert MOVE.to_command({"direction": "Up"}) == "Up"


@pytest.mark.parametrize(
    "response,commands",
    [
        ("<think>go up</think><answer>Up</answer>", ["Up"]),
        ("  <think>a</think>\n<answer> Up || Left ||  </answer>\n", ["Up", "Left"]),
        ("<think></think><answer>Right</answer>", ["Right"]),
    ],
)
def test_answer_format_accepts(response, commands):
    parsed = AnswerFormat().parse(response, (MOVE,))
    assert parsed.ok and parsed.commands == commands


@pytest.mark.parametrize(
    "response,reason",
    [
        ("<answer>Up</answer>", "missing <think>"),
        ("<think>x</think>", "missing <answer>"),
        ("<think>x</think><answer>  ||  </answer>", "empty"),
        ("<think>x</think><answer>Up</answer> trailing", "after"),
        ("hello <think>x</think><answer>Up</answer>", "before"),
        ("<think>x</think><answer>Up</answer><answer>Down</answer>", "exactly one"),
        ("</think>x<think><answer>Up</answer>", "before"),
    ],
)
def test_answer_format_rejects(response, reason):
    parsed = AnswerFormat().parse(response, (MOVE,))
    assert not parsed.ok and reason in parsed.error


def test_renamed_and_nothink_variants():
    renamed = get_format("answer-renamed")
    assert renamed.parse("<reasoning>r</reasoning><action>Up</action>", (MOVE,)).commands == ["Up"]
    assert not renamed.parse("<think>r</think><answer>Up</answer>", (MOVE,)).ok
    nothink = get_format("answer-nothink")
    assert nothink.parse("<answer>Up</answer>", (MOVE,)).commands == ["Up"]
    assert nothink.parse("<think>t</think><answer>Up</answer>", (MOVE,)).commands == ["Up"]


def test_tool_call_format():
    fmt = ToolCallFormat()
    ok = fmt.parse(
        '<think>t</think><tool_call>{"name": "search", "arguments": {"query": "red shoes"}}</tool_call>'
        '<tool_call>{"arguments": {"element": "Next >"}, "name": "click"}</tool_call>',
        SHOP,
    )
    assert ok.ok and ok.commands == ["search[red shoes]", "click[Next >]"] and ok.think == "t"
    for bad, reason in [
        ("search[x]", "no <tool_call>"),
        ("<tool_call>{oops}</tool_call>", "valid JSON"),
        ('<tool_call>{"name": "buy", "arguments": {}}</tool_call>', "unknown tool"),
        ('<tool_call>{"name": "search", "arguments": {"q": "x"}}</tool_call>', "missing"),
        ('<tool_call>{"name": "search", "arguments": {"query": ["x"]}}</tool_call>', "strings or numbers"),
        ('<tool_call>{"name": "search", "arguments": {"query": "x"}}</tool_call> and more', "outside"),
        ('<tool_call>{"name": "search"}</tool_call>', "a tool call is"),
    ]:
        parsed = fmt.parse(bad, SHOP)
        assert not parsed.ok and reason in parsed.error, (bad, parsed.error)


def test_tool_call_renamed_keys():
    fmt = get_format("tool_call-renamed")
    response = '<function_call>{"function": "move", "args": {"direction": "Up"}}</function_call>'
    assert fmt.parse(response, (MOVE,)).commands == ["Up"]
    assert not get_format("tool_call").parse(response, (MOVE,)).ok


def test_python_call_format():
    fmt = PythonCallFormat()
    assert fmt.parse('[move(direction="Up"), move("Left")]', (MOVE,)).commands == ["Up", "Left"]
    assert fmt.parse("<think>t</think> move(direction='Down')", (MOVE,)).commands == ["Down"]
    assert fmt.parse("[search(query=3)]", SHOP).commands == ["search[3]"]
    for bad in [
        "[move(direction=x)]",
        "[jump()]",
        "[move(**d)]",
        "move(",
        "[1, 2]",
        "[]",
        "[move('Up', 'Down')]",
        "__import__('os').system('true')",
    ]:
        assert not fmt.parse(bad, (MOVE,)).ok, bad


@pytest.mark.parametrize("name", list(FORMATS))
@given(
    query=st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=30).filter(
        lambda s: s.strip() == s and "]" not in s and "||" not in s and "<" not in s
    )
)
def test_render_then_parse_round_trip(name, query):
    fmt = FORMATS[name]
    commands = [f"search[{query}]", "click[Buy Now]"]
    response = fmt.render(commands, SHOP, think="plan")
    parsed = fmt.parse(response, SHOP)
    assert parsed.ok, (response, parsed.error)
    assert parsed.commands == commands


def test_describe_mentions_every_tool_and_variants_exist():
    for fmt in FORMATS.values():
        text = fmt.describe(SHOP, max_actions=3)
        assert "search" in text and "click" in text
        assert fmt.reminder
    for trained, variants in VARIANTS.items():
        assert trained in FORMATS and all(v in FORMATS for v in variants)
    with pytest.raises(ValueError, match="unknown response format"):
        get_format("xml")
