"""Response formats: how an LLM response carries its actions.

A format is an object, not string handling inside environments. It turns a raw response into the
environment's text commands (``parse``), writes commands as a response (``render``, used by the oracle
and SFT data) and explains itself to the model (``describe``, appended to the instructions). It also
names its control markers (``control_markers``: the tags that structure a reply) and the order they may
come in (``marker_transitions``, a small automaton), which the eval's turn states and control-token
diagnostics read through :class:`MarkerGrammar`.

An environment describes what it accepts as :class:`Tool` objects. A tool's ``template`` is its
canonical text command (``"{direction}"`` for Sokoban, ``"search[{query}]"`` for WebShop), so the
answer format passes text through while tool-call formats map ``name`` + ``arguments`` onto it.
"""

from __future__ import annotations

import ast
import functools
import json
import re
import string
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Tool:
    """One kind of action an environment accepts, e.g. ``move(direction)``."""

    name: str
    description: str
    params: dict[str, str]  # parameter name -> description, in call order
    template: str  # canonical text command with {param} placeholders

    def to_command(self, arguments: dict) -> str:
        return self.template.format(**{k: str(arguments[k]) for k in self.params})

    def match(self, command: str) -> dict[str, str] | None:
        """Arguments of ``command`` if it has this tool's text form, else None."""
        found = _template_pattern(self.template).fullmatch(command.strip())
        return None if found is None else found.groupdict()


@functools.lru_cache(maxsize=256)
def _template_pattern(template: str) -> re.Pattern:
    regex = ""
    for literal, param, _, _ in string.Formatter().parse(template):
        regex += re.escape(literal)
        if param is not None:
            regex += f"(?P<{param}>.+?)"
    return re.compile(regex, re.DOTALL)


def match_tool(command: str, tools: Sequence[Tool]) -> tuple[Tool, dict[str, str]] | None:
    """The first tool whose text form matches ``command``, with its arguments."""
    for tool in tools:
        arguments = tool.match(command)
        if arguments is not None:
            return tool, arguments
    return None


@dataclass
class Parsed:
    """The result of parsing one response."""

    ok: bool
    commands: list[str] = field(default_factory=list)
    think: str = ""
    error: str = ""


def _fail(error: str) -> Parsed:
    return Parsed(ok=False, error=error)


END_OF_TURN = "<end-of-turn>"  # the end-of-turn marker of a grammar (a tokenizer's eos, not text)


class MarkerGrammar:
    """Which control markers may come next after the markers a reply has written so far.

    ``transitions`` is an automaton over markers: state -> {marker: next state}, 0 the start state. A
    marker with no entry in the current state breaks the grammar. ``END_OF_TURN`` may appear in the
    transitions without being one of ``markers`` (it is a token, never found in text).
    """

    def __init__(self, markers: Sequence[str], transitions: dict[int, dict[str, int]]) -> None:
        if not markers or any(not m for m in markers):
            raise ValueError(f"a marker grammar needs non-empty markers, got {list(markers)}")
        if 0 not in transitions:
            raise ValueError("a marker grammar needs the start state 0")
        for state, moves in transitions.items():
            for marker, target in moves.items():
                if marker != END_OF_TURN and marker not in markers:
                    raise ValueError(f"state {state} moves on {marker!r}, which is not a marker")
                if target not in transitions:
                    raise ValueError(f"state {state} moves on {marker!r} to unknown state {target}")
        self.markers = list(markers)
        self.transitions = transitions
        longest_first = sorted(self.markers, key=len, reverse=True)
        self._scan = re.compile("|".join(re.escape(m) for m in longest_first))

    def markers_in(self, text: str) -> list[str]:
        """The markers of ``text`` in order (a longer marker wins over one it contains)."""
        return self._scan.findall(text)

    def state_after(self, seen: Sequence[str]) -> int | None:
        """The state after the markers ``seen``, or None once they broke the grammar."""
        state = 0
        for marker in seen:
            next_state = self.transitions[state].get(marker)
            if next_state is None:
                return None
            state = next_state
        return state

    def legal(self, state: int) -> set[str]:
        """The markers that may come next in ``state``."""
        return set(self.transitions[state])

    def strip_markers(self, text: str) -> str:
        return self._scan.sub("", text)

    def inside_marker(self, text: str) -> bool:
        """``text`` ends with a proper prefix of a marker (a marker is half written)."""
        return any(text.endswith(m[:k]) for m in self.markers for k in range(1, len(m)))


class ResponseFormat(ABC):
    """Base class of response formats.

    A subclass writes ``_parse``; callers use ``parse``, the one guard every format shares: whatever a
    pathological reply makes the parsing machinery raise (an integer too long to convert, JSON or Python
    nested deeper than the interpreter's recursion limit, a literal too large for memory) becomes a
    parse failure, never an exception.
    """

    name: str
    think_tag: str  # the tag of the reasoning block, e.g. "think" for <think>...</think>

    def parse(self, response: str, tools: Sequence[Tool]) -> Parsed:
        """The commands of ``response``, or why it does not follow the format (``ok`` False)."""
        try:
            return self._parse(response, tools)
        except (ValueError, RecursionError, MemoryError, OverflowError) as exc:
            # JSON and literal syntax errors are reported by each format; these are the limits of the
            # machinery itself, reached only by adversarial replies
            return _fail(f"the reply is too large or too deeply nested to read ({type(exc).__name__})")

    @abstractmethod
    def _parse(self, response: str, tools: Sequence[Tool]) -> Parsed: ...

    @abstractmethod
    def render(self, commands: Sequence[str], tools: Sequence[Tool], think: str = "") -> str: ...

    @abstractmethod
    def describe(self, tools: Sequence[Tool], max_actions: int = 1) -> str: ...

    @property
    @abstractmethod
    def reminder(self) -> str:
        """One line recalled at every turn, as RAGEN's turn prompts do."""

    @abstractmethod
    def control_markers(self) -> list[str]:
        """The tags that structure a reply, end-of-turn excluded (e.g. ``<think>``, ``</answer>``)."""

    @abstractmethod
    def marker_transitions(self) -> dict[int, dict[str, int]]:
        """The order markers may come in: state -> {marker: next state}, 0 the start (see MarkerGrammar).
        ``END_OF_TURN`` marks where the reply may end."""

    def marker_grammar(self) -> MarkerGrammar:
        return MarkerGrammar(self.control_markers(), self.marker_transitions())

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


def _single_block(response: str, tag: str) -> tuple[str | None, str]:
    """Content of the only ``<tag>...</tag>`` block, or (None, reason)."""
    opens, closes = response.count(f"<{tag}>"), response.count(f"</{tag}>")
    if opens == 0 and closes == 0:
        return None, f"missing <{tag}>...</{tag}>"
    if opens != 1 or closes != 1:
        return (
            None,
            f"expected exactly one <{tag}>...</{tag}> block, found {opens} opening and {closes} closing tags",
        )
    start, end = response.index(f"<{tag}>") + len(tag) + 2, response.index(f"</{tag}>")
    if end < start:
        return None, f"</{tag}> comes before <{tag}>"
    return response[start:end], ""


class AnswerFormat(ResponseFormat):
    """``<think>...</think><answer>a1 || a2</answer>``, RAGEN's default format."""

    def __init__(
        self,
        think_tag: str = "think",
        answer_tag: str = "answer",
        separator: str = "||",
        require_think: bool = True,
        name: str = "answer",
    ) -> None:
        self.think_tag, self.answer_tag, self.separator = think_tag, answer_tag, separator
        self.require_think, self.name = require_think, name

    def _parse(self, response: str, tools: Sequence[Tool]) -> Parsed:
        think = ""
        rest = response
        if self.require_think or f"<{self.think_tag}>" in response:
            block, error = _single_block(response, self.think_tag)
            if block is None:
                return _fail(error)
            think = block
            if response.index(f"<{self.think_tag}>") > response.index(f"</{self.think_tag}>"):
                return _fail(f"</{self.think_tag}> comes before <{self.think_tag}>")
            before, _, rest = response.partition(f"</{self.think_tag}>")
            if before.split(f"<{self.think_tag}>")[0].strip():
                return _fail(f"text before <{self.think_tag}>")
        answer, error = _single_block(rest, self.answer_tag)
        if answer is None:
            return _fail(error)
        if rest.split(f"<{self.answer_tag}>")[0].strip():
            return _fail(f"text between </{self.think_tag}> and <{self.answer_tag}>")
        if rest.split(f"</{self.answer_tag}>")[1].strip():
            return _fail(f"text after </{self.answer_tag}>")
        commands = [c.strip() for c in answer.split(self.separator)] if self.separator else [answer.strip()]
        commands = [c for c in commands if c]
        if not commands:
            return _fail(f"empty <{self.answer_tag}>")
        return Parsed(ok=True, commands=commands, think=think.strip())

    def render(self, commands: Sequence[str], tools: Sequence[Tool], think: str = "") -> str:
        sep = f" {self.separator} " if self.separator else ""
        answer = f"<{self.answer_tag}>{sep.join(commands)}</{self.answer_tag}>"
        if self.require_think or think:
            return f"<{self.think_tag}>{think}</{self.think_tag}>{answer}"
        return answer

    def describe(self, tools: Sequence[Tool], max_actions: int = 1) -> str:
        lines = []
        if self.require_think:
            lines.append(
                f"Reply as <{self.think_tag}>your reasoning</{self.think_tag}>"
                f"<{self.answer_tag}>your action</{self.answer_tag}> with no other text."
            )
        else:
            lines.append(f"Reply as <{self.answer_tag}>your action</{self.answer_tag}> with no other text.")
        lines.append("Actions:")
        for tool in tools:
            params = "; ".join(f"{p}: {d}" for p, d in tool.params.items())
            form = tool.template.format(**{p: p.upper() for p in tool.params})
            lines.append(f"- {form}: {tool.description} ({params})")
        if max_actions > 1 and self.separator:
            lines.append(
                f"You may give up to {max_actions} actions in one answer, separated by `{self.separator}`."
            )
        return "\n".join(lines)

    @property
    def reminder(self) -> str:
        if self.require_think:
            return (
                f"Always output: <{self.think_tag}> [your thoughts] </{self.think_tag}> "
                f"<{self.answer_tag}> [your answer] </{self.answer_tag}> with no extra text."
            )
        return f"Always output: <{self.answer_tag}> [your answer] </{self.answer_tag}> with no extra text."

    def control_markers(self) -> list[str]:
        think, answer = self.think_tag, self.answer_tag
        return [f"<{think}>", f"</{think}>", f"<{answer}>", f"</{answer}>"]

    def marker_transitions(self) -> dict[int, dict[str, int]]:
        # think block (required or optional), then exactly one answer block, then end-of-turn
        t_open, t_close = f"<{self.think_tag}>", f"</{self.think_tag}>"
        a_open, a_close = f"<{self.answer_tag}>", f"</{self.answer_tag}>"
        start = {t_open: 1} if self.require_think else {t_open: 1, a_open: 3}
        return {0: start, 1: {t_close: 2}, 2: {a_open: 3}, 3: {a_close: 4}, 4: {END_OF_TURN: 5}, 5: {}}


def _strip_optional_think(response: str, think_tag: str) -> tuple[str | None, str, str]:
    """(rest, think, error): remove a leading ``<think>...</think>`` block if there is one."""
    if f"<{think_tag}>" not in response and f"</{think_tag}>" not in response:
        return response, "", ""
    think, error = _single_block(response, think_tag)
    if think is None:
        return None, "", error
    before, _, rest = response.partition(f"</{think_tag}>")
    if before.split(f"<{think_tag}>")[0].strip():
        return None, "", f"text before <{think_tag}>"
    return rest, think.strip(), ""


def _call_to_command(name: object, arguments: object, tools: Sequence[Tool]) -> tuple[str | None, str]:
    by_name = {t.name: t for t in tools}
    if not isinstance(name, str) or name not in by_name:
        return None, f"unknown tool {name!r}; tools: {', '.join(by_name)}"
    tool = by_name[name]
    if not isinstance(arguments, dict):
        return None, f"arguments of {name} must be an object"
    missing = [p for p in tool.params if p not in arguments]
    extra = [a for a in arguments if a not in tool.params]
    if missing or extra:
        return None, f"{name} takes arguments {list(tool.params)}; missing {missing}, unexpected {extra}"
    bad = [k for k, v in arguments.items() if isinstance(v, (dict, list)) or v is None]
    if bad:
        return None, f"arguments {bad} of {name} must be strings or numbers"
    return tool.to_command(arguments), ""


def _command_to_call(command: str, tools: Sequence[Tool]) -> tuple[str, dict[str, str]]:
    found = match_tool(command, tools)
    if found is None:
        raise ValueError(f"command {command!r} matches no tool of {[t.name for t in tools]}")
    return found[0].name, found[1]


class ToolCallFormat(ResponseFormat):
    """``<tool_call>{"name": ..., "arguments": {...}}</tool_call>`` blocks, after an optional think block."""

    def __init__(
        self,
        tag: str = "tool_call",
        think_tag: str = "think",
        name_key: str = "name",
        arguments_key: str = "arguments",
        arguments_first: bool = False,
        name: str = "tool_call",
    ) -> None:
        self.tag, self.think_tag = tag, think_tag
        self.name_key, self.arguments_key, self.arguments_first = name_key, arguments_key, arguments_first
        self.name = name
        self._block = re.compile(rf"<{re.escape(tag)}>(.*?)</{re.escape(tag)}>", re.DOTALL)

    def _parse(self, response: str, tools: Sequence[Tool]) -> Parsed:
        rest, think, error = _strip_optional_think(response, self.think_tag)
        if rest is None:
            return _fail(error)
        blocks = self._block.findall(rest)
        if not blocks:
            return _fail(f"no <{self.tag}>...</{self.tag}> block")
        if self._block.sub("", rest).strip():
            return _fail(f"text outside the <{self.tag}> blocks")
        commands = []
        for block in blocks:
            try:
                call = json.loads(block)
            except json.JSONDecodeError as exc:
                return _fail(f"<{self.tag}> does not hold valid JSON ({exc.msg})")
            if not isinstance(call, dict) or set(call) != {self.name_key, self.arguments_key}:
                return _fail(f'a tool call is {{"{self.name_key}": ..., "{self.arguments_key}": {{...}}}}')
            command, error = _call_to_command(call[self.name_key], call[self.arguments_key], tools)
            if command is None:
                return _fail(error)
            commands.append(command)
        return Parsed(ok=True, commands=commands, think=think)

    def _call_json(self, name: str, arguments: dict) -> str:
        pairs = [(self.name_key, name), (self.arguments_key, arguments)]
        return json.dumps(dict(reversed(pairs) if self.arguments_first else pairs), ensure_ascii=False)

    def render(self, commands: Sequence[str], tools: Sequence[Tool], think: str = "") -> str:
        calls = "".join(
            f"<{self.tag}>{self._call_json(*_command_to_call(c, tools))}</{self.tag}>" for c in commands
        )
        return f"<{self.think_tag}>{think}</{self.think_tag}>{calls}" if think else calls

    def describe(self, tools: Sequence[Tool], max_actions: int = 1) -> str:
        lines = [
            f"You may think inside <{self.think_tag}>...</{self.think_tag}> first. Then call a tool as "
            f"<{self.tag}>{self._call_json('NAME', {'ARG': 'VALUE'})}</{self.tag}> with no other text.",
            "Tools:",
        ]
        for tool in tools:
            params = ", ".join(f'"{p}": {d}' for p, d in tool.params.items())
            lines.append(f"- {tool.name}: {tool.description} Arguments: {{{params}}}")
        if max_actions > 1:
            lines.append(f"You may make up to {max_actions} tool calls in one reply.")
        return "\n".join(lines)

    @property
    def reminder(self) -> str:
        think, tag = self.think_tag, self.tag
        return f"Always output an optional <{think}>...</{think}> then <{tag}>...</{tag}> blocks."

    def control_markers(self) -> list[str]:
        think, tag = self.think_tag, self.tag
        return [f"<{think}>", f"</{think}>", f"<{tag}>", f"</{tag}>"]

    def marker_transitions(self) -> dict[int, dict[str, int]]:
        # an optional think block, then one or more call blocks, then end-of-turn
        t_open, t_close = f"<{self.think_tag}>", f"</{self.think_tag}>"
        c_open, c_close = f"<{self.tag}>", f"</{self.tag}>"
        return {
            0: {t_open: 1, c_open: 3},
            1: {t_close: 2},
            2: {c_open: 3},
            3: {c_close: 4},
            4: {c_open: 3, END_OF_TURN: 5},
            5: {},
        }


class PythonCallFormat(ResponseFormat):
    """``[move(direction="Up"), move(direction="Left")]`` after an optional think block."""

    def __init__(self, think_tag: str = "think", name: str = "python_call") -> None:
        self.think_tag, self.name = think_tag, name

    def _parse(self, response: str, tools: Sequence[Tool]) -> Parsed:
        rest, think, error = _strip_optional_think(response, self.think_tag)
        if rest is None:
            return _fail(error)
        try:
            tree = ast.parse(rest.strip(), mode="eval").body
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            return _fail('the reply is not a Python list of calls such as [tool(arg="value")]')
        calls = tree.elts if isinstance(tree, ast.List) else [tree]
        if not calls:
            return _fail("empty call list")
        by_name = {t.name: t for t in tools}
        commands = []
        for call in calls:
            if not isinstance(call, ast.Call) or not isinstance(call.func, ast.Name):
                return _fail('each element must be a call such as tool(arg="value")')
            tool = by_name.get(call.func.id)
            arguments: dict[str, object] = {}
            try:
                for position, node in enumerate(call.args):
                    if tool is None or position >= len(tool.params):
                        return _fail(f"too many positional arguments in {call.func.id}(...)")
                    arguments[list(tool.params)[position]] = ast.literal_eval(node)
                for keyword in call.keywords:
                    if keyword.arg is None:
                        return _fail("**kwargs are not allowed in a call")
                    arguments[keyword.arg] = ast.literal_eval(keyword.value)
            except (ValueError, TypeError, SyntaxError, RecursionError):
                return _fail("arguments must be literal values")
            command, error = _call_to_command(call.func.id, arguments, tools)
            if command is None:
                return _fail(error)
            commands.append(command)
        return Parsed(ok=True, commands=commands, think=think)

    def render(self, commands: Sequence[str], tools: Sequence[Tool], think: str = "") -> str:
        calls = []
        for command in commands:
            name, arguments = _command_to_call(command, tools)
            calls.append(f"{name}({', '.join(f'{k}={v!r}' for k, v in arguments.items())})")
        body = f"[{', '.join(calls)}]"
        return f"<{self.think_tag}>{think}</{self.think_tag}>{body}" if think else body

    def describe(self, tools: Sequence[Tool], max_actions: int = 1) -> str:
        lines = [
            f"You may think inside <{self.think_tag}>...</{self.think_tag}> first. Then reply with a "
            "Python list "
            'of calls such as [tool(arg="value")] and no other text.',
            "Tools:",
        ]
        for tool in tools:
            params = ", ".join(f"{p}: {d}" for p, d in tool.params.items())
            lines.append(f"- {tool.name}({', '.join(tool.params)}): {tool.description} ({params})")
        if max_actions > 1:
            lines.append(f"The list may hold up to {max_actions} calls.")
        return "\n".join(lines)

    @property
    def reminder(self) -> str:
        return (
            f"Always output an optional <{self.think_tag}>...</{self.think_tag}> then a Python list of calls."
        )

    def control_markers(self) -> list[str]:
        return [f"<{self.think_tag}>", f"</{self.think_tag}>"]

    def marker_transitions(self) -> dict[int, dict[str, int]]:
        # an optional think block, then the call list (plain text, no markers), then end-of-turn
        t_open, t_close = f"<{self.think_tag}>", f"</{self.think_tag}>"
        return {0: {t_open: 1, END_OF_TURN: 5}, 1: {t_close: 2}, 2: {END_OF_TURN: 5}, 5: {}}


FORMATS: dict[str, ResponseFormat] = {
    "answer": AnswerFormat(),
    "answer-nothink": AnswerFormat(require_think=False, name="answer-nothink"),
    "answer-renamed": AnswerFormat(think_tag="reasoning", answer_tag="action", name="answer-renamed"),
    "tool_call": ToolCallFormat(),
    "tool_call-reordered": ToolCallFormat(arguments_first=True, name="tool_call-reordered"),
    "tool_call-renamed": ToolCallFormat(
        tag="function_call", name_key="function", arguments_key="args", name="tool_call-renamed"
    ),
    "python_call": PythonCallFormat(),
}

# Schema variations of each trained format, for format-stability evals.
VARIANTS: dict[str, list[str]] = {
    "answer": ["answer-renamed", "answer-nothink", "tool_call", "python_call"],
    "tool_call": ["tool_call-reordered", "tool_call-renamed", "python_call", "answer"],
    "python_call": ["tool_call", "answer"],
}


def get_format(spec: str | ResponseFormat) -> ResponseFormat:
    """A format object from its name (see ``FORMATS``) or the object itself."""
    if isinstance(spec, ResponseFormat):
        return spec
    if spec not in FORMATS:
        raise ValueError(f"unknown response format {spec!r}; known: {', '.join(FORMATS)}")
    return FORMATS[spec]
