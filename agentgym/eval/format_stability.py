"""Tool-format stability: turn states, control-token spikes and schema variants.

Three measures (DESIGN.md, Metrics):

(a) The per-turn format-valid rate is in every summary (``agentgym.eval.metrics.summarize``).

(b) Schema variants (:func:`evaluate_format_variants`): the same policy is evaluated under the variants of
    its trained format (``agentgym.formats.VARIANTS``: renamed tags, JSON vs python-call syntax, reordered
    fields), and each variant's success and format-valid rate are reported with their drop against the
    trained schema (drop = trained - variant, so a positive drop is a loss).

(c) Turn states and control-token spikes.

    Every assistant turn falls in exactly one state:

    - ``healthy_tool_call``: the reply parses under the active format (``format_ok``) and the episode
      goes on after it: a well-formed action the environment carried out.
    - ``healthy_answer``: the reply parses and it ends the episode (``terminated``): the agent's final,
      well-formed move or submission.
    - ``text_pollution``: the reply does not parse but holds at least one control marker of the format
      (e.g. ``<answer>``, ``</tool_call>``) and some content besides: the structure is there, but text leaked
      into or around it, or the markers are unbalanced or out of order.
    - ``full_collapse``: the reply does not parse and is structureless: no control marker at all (prose,
      an empty reply) or nothing but control markers and whitespace (degenerate repetition).

    Control markers of a format are its tags (``<think>``, ``</think>``, ``<answer>``, ``</answer>`` for the
    answer format; the call tags for the tool-call format) plus end-of-turn (the tokenizer's eos). A small
    automaton per format says which marker may come next after the markers already written (e.g. after
    ``<think>`` only ``</think>``; end-of-turn only after ``</answer>``). At each generated position of an
    ``hf:`` policy's reply, the *wrong control mass* is the probability the policy puts on control tokens
    whose markers are all illegal there. A control token is the single token a marker encodes to, or the
    first token of its encoding when that token is at least two characters long (``</`` in a byte-level
    BPE); a one-character first token such as ``<`` is too common to count and is left out. Positions
    inside a marker, and positions after the reply has already broken the grammar, are not scored.
    Reported: the mean wrong mass over scored positions, the mean over turns of each turn's largest wrong
    mass (the spike), and the share of turns whose spike exceeds 0.5.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from agentgym.formats import (
    VARIANTS,
    AnswerFormat,
    PythonCallFormat,
    ResponseFormat,
    ToolCallFormat,
    get_format,
)

TURN_STATES = ("healthy_tool_call", "healthy_answer", "text_pollution", "full_collapse")
EOT = "<end-of-turn>"  # the end-of-turn marker (the tokenizer's eos token)
SPIKE_THRESHOLD = 0.5


# ----- control markers and their grammar -----


def control_markers(fmt: ResponseFormat) -> list[str]:
    """The textual control markers of a format (end-of-turn excluded)."""
    think = getattr(fmt, "think_tag", "think")
    markers = [f"<{think}>", f"</{think}>"]
    if isinstance(fmt, AnswerFormat):
        markers += [f"<{fmt.answer_tag}>", f"</{fmt.answer_tag}>"]
    elif isinstance(fmt, ToolCallFormat):
        markers += [f"<{fmt.tag}>", f"</{fmt.tag}>"]
    return markers


def _transitions(fmt: ResponseFormat) -> dict[int, dict[str, int]]:
    """The automaton over markers: state -> {marker: next state}; state 0 is the start."""
    think = getattr(fmt, "think_tag", "think")
    t_open, t_close = f"<{think}>", f"</{think}>"
    if isinstance(fmt, AnswerFormat):
        a_open, a_close = f"<{fmt.answer_tag}>", f"</{fmt.answer_tag}>"
        start = {t_open: 1} if fmt.require_think else {t_open: 1, a_open: 3}
        return {0: start, 1: {t_close: 2}, 2: {a_open: 3}, 3: {a_close: 4}, 4: {EOT: 5}, 5: {}}
    if isinstance(fmt, ToolCallFormat):
        c_open, c_close = f"<{fmt.tag}>", f"</{fmt.tag}>"
        return {
            0: {t_open: 1, c_open: 3},
            1: {t_close: 2},
            2: {c_open: 3},
            3: {c_close: 4},
            4: {c_open: 3, EOT: 5},
            5: {},
        }
    if isinstance(fmt, PythonCallFormat):
        return {0: {t_open: 1, EOT: 5}, 1: {t_close: 2}, 2: {EOT: 5}, 5: {}}
    raise ValueError(f"no control grammar for {fmt!r}")


class ControlGrammar:
    """Which control markers are legal after the markers written so far (see the module docstring)."""

    def __init__(self, fmt: ResponseFormat | str) -> None:
        self.format = get_format(fmt)
        self.markers = control_markers(self.format)
        self.table = _transitions(self.format)
        self._scan = re.compile("|".join(re.escape(m) for m in sorted(self.markers, key=len, reverse=True)))

    def markers_in(self, text: str) -> list[str]:
        return self._scan.findall(text)

    def state_after(self, seen: Sequence[str]) -> int | None:
        """The automaton state after ``seen`` markers, or None once they broke the grammar."""
        state = 0
        for marker in seen:
            state = self.table[state].get(marker)
            if state is None:
                return None
        return state

    def legal(self, state: int) -> set[str]:
        return set(self.table[state])

    def strip_markers(self, text: str) -> str:
        return self._scan.sub("", text)

    def inside_marker(self, text: str) -> bool:
        """``text`` ends with a proper prefix of a marker (a marker is half written)."""
        return any(text.endswith(m[:k]) for m in self.markers for k in range(1, len(m)))


# ----- (c) turn states -----


def turn_state(response: str, format_ok: bool, ends_episode: bool, fmt: ResponseFormat | str) -> str:
    """The state of one assistant turn (definitions in the module docstring)."""
    if format_ok:
        return "healthy_answer" if ends_episode else "healthy_tool_call"
    grammar = _grammar(get_format(fmt).name) if isinstance(fmt, str) else ControlGrammar(fmt)
    text = response if isinstance(response, str) else ""
    if not grammar.markers_in(text) or not grammar.strip_markers(text).strip():
        return "full_collapse"
    return "text_pollution"


@functools.lru_cache(maxsize=64)
def _grammar(name: str) -> ControlGrammar:
    return ControlGrammar(name)


def turn_state_shares(records: Sequence[dict[str, Any]], fmt: ResponseFormat | str) -> dict[str, float]:
    """The share of turns in each state over ``trajectories.jsonl`` records."""
    counts: Counter[str] = Counter()
    for record in records:
        replies = [m["content"] for m in record["messages"] if m["role"] == "assistant"]
        for t, (reply, ok) in enumerate(zip(replies, record["format_ok"], strict=False)):
            last = t == len(record["format_ok"]) - 1
            counts[turn_state(reply, bool(ok), last and bool(record.get("terminated")), fmt)] += 1
    total = sum(counts.values())
    shares = {state: (counts[state] / total if total else 0.0) for state in TURN_STATES}
    shares["turns"] = total
    return shares


# ----- (c) control-token spikes -----


def control_token_ids(tokenizer: Any, fmt: ResponseFormat | str) -> dict[int, set[str]]:
    """Token id -> the control markers that start with it (see the module docstring for the rule)."""
    grammar = ControlGrammar(fmt)
    ids: dict[int, set[str]] = {}
    for marker in grammar.markers:
        encoded = tokenizer.encode(marker, add_special_tokens=False)
        if not encoded:
            continue
        first = encoded[0]
        if len(encoded) == 1 or len(tokenizer.decode([first])) >= 2:
            ids.setdefault(first, set()).add(marker)
    for eos in _eos_ids(tokenizer):
        ids.setdefault(eos, set()).add(EOT)
    return ids


def _eos_ids(tokenizer: Any) -> list[int]:
    eos = tokenizer.eos_token_id
    return [eos] if isinstance(eos, int) else list(eos or [])


def prefix_texts(tokenizer: Any, ids: Sequence[int]) -> list[str]:
    """``decode(ids[:t])`` for t = 0..len(ids) (special tokens skipped, as the policy's text)."""
    return [tokenizer.decode(list(ids[:t]), skip_special_tokens=True) for t in range(len(ids) + 1)]


def wrong_control_mass(
    tokenizer: Any,
    fmt: ResponseFormat | str,
    response_ids: Sequence[int],
    probe_probs: np.ndarray,
    probe_ids: Sequence[int],
) -> np.ndarray:
    """The wrong control mass at each scorable position of one reply (positions not scored are dropped).

    ``probe_probs[t, k]`` is the probability of ``probe_ids[k]`` at position t (from the scorer).
    """
    grammar = ControlGrammar(fmt)
    markers_of = control_token_ids(tokenizer, fmt)
    eos = set(_eos_ids(tokenizer))
    texts = prefix_texts(tokenizer, response_ids)
    masses = []
    for t in range(len(response_ids)):
        before = texts[t]
        if t > 0 and response_ids[t - 1] in eos:
            break  # nothing after end-of-turn is generated
        if grammar.inside_marker(before):
            continue
        state = grammar.state_after(grammar.markers_in(before))
        if state is None:
            break
        legal = grammar.legal(state)
        wrong = sum(
            probe_probs[t, k]
            for k, tok in enumerate(probe_ids)
            if tok in markers_of and not (markers_of[tok] & legal)
        )
        masses.append(float(wrong))
    return np.array(masses)


def control_spike_report(per_turn_masses: Sequence[np.ndarray]) -> dict[str, float]:
    """Aggregate the per-position wrong control masses of many turns."""
    scored = [m for m in per_turn_masses if len(m)]
    if not scored:
        return {
            "wrong_control_mass_mean": None,
            "wrong_control_mass_spike": None,
            "spike_turn_rate": None,
            "turns_scored": 0,
        }
    peaks = np.array([m.max() for m in scored])
    return {
        "wrong_control_mass_mean": float(np.concatenate(scored).mean()),
        "wrong_control_mass_spike": float(peaks.mean()),
        "spike_turn_rate": float((peaks > SPIKE_THRESHOLD).mean()),
        "turns_scored": len(scored),
    }


# ----- (b) schema variants -----


def trained_format_name(env_id: str, env_kwargs: dict[str, Any] | None) -> str:
    """The name of the format an environment uses with these kwargs: the ``response_format`` given, else
    the registered kwargs, else the default of the environment class's constructor (read from its
    signature, so no environment is built: some start a browser)."""
    import gymnasium as gym

    fmt = (env_kwargs or {}).get("response_format")
    spec = gym.spec(env_id)
    if fmt is None:
        fmt = spec.kwargs.get("response_format")
    if fmt is None:
        entry = spec.entry_point
        if isinstance(entry, str):
            module, _, name = entry.partition(":")
            entry = getattr(importlib.import_module(module), name)
        for cls in getattr(entry, "__mro__", ()):
            param = (
                inspect.signature(cls.__init__).parameters.get("response_format")
                if "__init__" in vars(cls)
                else None
            )
            if param is not None and param.default is not inspect.Parameter.empty:
                fmt = param.default
                break
    return get_format(fmt if fmt is not None else "answer").name


def evaluate_format_variants(
    env_id: str,
    policy: Any,
    episodes: int,
    *,
    trained: dict[str, Any] | None = None,
    variants: Sequence[str] | None = None,
    out: str | Path | None = None,
    env_kwargs: dict[str, Any] | None = None,
    **evaluate_kwargs: Any,
) -> dict[str, Any]:
    """Evaluate ``policy`` under each schema variant of the active format; report the drop of each.

    ``trained`` is the summary of the run under the trained schema (evaluated here when None). Variant
    runs go to ``OUT/variants/<name>/`` and resume like any eval. Returns ``{"trained_format",
    "trained": {success_rate, format_valid_rate}, "variants": {name: {success_rate, format_valid_rate,
    success_drop, format_valid_drop, episodes}}}``.
    """
    from agentgym.eval.runner import evaluate

    evaluate_kwargs.setdefault("diagnostics", False)  # the variants report success and format only
    env_kwargs = dict(env_kwargs or {})
    base = trained_format_name(env_id, env_kwargs)
    names = list(variants) if variants is not None else VARIANTS.get(base, [])
    if not names:
        raise ValueError(f"format {base!r} has no schema variants; known: {', '.join(VARIANTS)}")
    out = Path(out) if out is not None else None
    if trained is None:
        trained = evaluate(
            env_id,
            policy,
            episodes,
            out=None if out is None else out / "variants" / base,
            env_kwargs=env_kwargs,
            **evaluate_kwargs,
        )
    report: dict[str, Any] = {
        "trained_format": base,
        "trained": {k: trained[k] for k in ("success_rate", "format_valid_rate")},
        "variants": {},
    }
    for name in names:
        summary = evaluate(
            env_id,
            policy,
            episodes,
            out=None if out is None else out / "variants" / name,
            env_kwargs={**env_kwargs, "response_format": name},
            **evaluate_kwargs,
        )
        report["variants"][name] = {
            "success_rate": summary["success_rate"],
            "format_valid_rate": summary["format_valid_rate"],
            "success_drop": trained["success_rate"] - summary["success_rate"],
            "format_valid_drop": trained["format_valid_rate"] - summary["format_valid_rate"],
            "episodes": summary["episodes"],
        }
    return report
