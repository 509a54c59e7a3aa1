"""Response formats: parsing, rendering and their round trip, on the tools of real environments."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentgym.formats import (
    END_OF_TURN,
    FORMATS,
    VARIANTS,
    AnswerFormat,
    MarkerGrammar,
    PythonCallFormat,
    ResponseFormat,
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


THINK = ["<think>", "</think>"]


@pytest.mark.parametrize(
    ("name", "markers"),
    [
        ("answer", [*THINK, "<answer>", "</answer>"]),
        ("answer-nothink", [*THINK, "<answer>", "</answer>"]),
        ("answer-renamed", ["<reasoning>", "</reasoning>", "<action>", "</action>"]),
        ("tool_call", [*THINK, "<tool_call>", "</tool_call>"]),
        ("tool_call-reordered", [*THINK, "<tool_call>", "</tool_call>"]),
        ("tool_call-renamed", [*THINK, "<function_call>", "</function_call>"]),
        ("python_call", THINK),
    ],
)
def test_control_markers_of_each_format(name, markers):
    assert get_format(name).control_markers() == markers


def test_marker_transitions_of_each_format():
    eot = END_OF_TURN
    assert get_format("answer").marker_transitions() == {
        0: {"<think>": 1},
        1: {"</think>": 2},
        2: {"<answer>": 3},
        3: {"</answer>": 4},
        4: {eot: 5},
        5: {},
    }
    assert get_format("answer-nothink").marker_transitions()[0] == {"<think>": 1, "<answer>": 3}
    assert get_format("answer-renamed").marker_transitions() == {
        0: {"<reasoning>": 1},
        1: {"</reasoning>": 2},
        2: {"<action>": 3},
        3: {"</action>": 4},
        4: {eot: 5},
        5: {},
    }
    assert get_format("tool_call").marker_transitions() == {
        0: {"<think>": 1, "<tool_call>": 3},
        1: {"</think>": 2},
        2: {"<tool_call>": 3},
        3: {"</tool_call>": 4},
        4: {"<tool_call>": 3, eot: 5},
        5: {},
    }
    renamed = get_format("tool_call-renamed").marker_transitions()
    assert renamed[2] == {"<function_call>": 3} and renamed[4] == {"<function_call>": 3, eot: 5}
    assert get_format("python_call").marker_transitions() == {
        0: {"<think>": 1, eot: 5},
        1: {"</think>": 2},
        2: {eot: 5},
        5: {},
    }


@pytest.mark.parametrize("name", list(FORMATS))
@pytest.mark.parametrize("think", ["", "plan"])
@pytest.mark.parametrize("commands", [["search[shoes]"], ["search[shoes]", "click[Buy Now]"]])
def test_every_rendered_reply_walks_its_grammar_to_end_of_turn(name, think, commands):
    fmt = FORMATS[name]
    grammar = fmt.marker_grammar()
    response = fmt.render(commands, SHOP, think=think)
    state = grammar.state_after(grammar.markers_in(response))
    assert state is not None and END_OF_TURN in grammar.legal(state), response


def test_marker_grammar_rejects_out_of_order_markers():
    answer = get_format("answer").marker_grammar()
    assert answer.markers_in("<answer>Up</answer><think>x</think>") == [
        "<answer>",
        "</answer>",
        "<think>",
        "</think>",
    ]
    assert answer.state_after(["<answer>", "</answer>"]) is None
    assert answer.state_after(["<think>", "</think>", "<answer>", "</answer>", "<answer>"]) is None
    tool = get_format("tool_call").marker_grammar()
    assert tool.state_after(["<tool_call>", "</tool_call>", "<think>"]) is None
    assert tool.state_after(["<tool_call>", "</tool_call>", "<tool_call>", "</tool_call>"]) == 4
    python = get_format("python_call").marker_grammar()
    assert python.legal(0) == {"<think>", END_OF_TURN}
    assert python.state_after(["</think>"]) is None


def test_marker_grammar_text_helpers():
    g = get_format("answer").marker_grammar()
    assert g.strip_markers("<think>a</think> <answer>Up</answer>") == "a Up"
    assert g.inside_marker("<think>a</thi") and g.inside_marker("x<") and not g.inside_marker("<think>")
    assert not g.inside_marker("plain text")


@pytest.mark.parametrize(
    ("markers", "transitions", "error"),
    [
        ([], {0: {}}, "non-empty markers"),
        (["<a>", ""], {0: {}}, "non-empty markers"),
        (["<a>"], {1: {"<a>": 1}}, "start state 0"),
        (["<a>"], {0: {"<b>": 0}}, "not a marker"),
        (["<a>"], {0: {"<a>": 7}}, "unknown state 7"),
    ],
)
def test_marker_grammar_rejects_a_broken_automaton(markers, transitions, error):
    with pytest.raises(ValueError, match=error):
        MarkerGrammar(markers, transitions)


def test_a_format_must_name_its_markers_and_grammar():
    class NoGrammar(ResponseFormat):
        name, think_tag = "no-grammar", "think"

        def _parse(self, response, tools):
            raise NotImplementedError

        def render(self, commands, tools, think=""):
            raise NotImplementedError

        def describe(self, tools, max_actions=1):
            raise NotImplementedError

        @property
        def reminder(self):
            return ""

    with pytest.raises(TypeError, match="control_markers"):
        NoGrammar()
