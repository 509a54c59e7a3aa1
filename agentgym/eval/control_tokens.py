"""Control-token mass: how much probability a model puts on format markers where they are illegal.

Control markers of a format are its tags (``ResponseFormat.control_markers``: ``<think>``, ``</think>``,
``<answer>``, ``</answer>`` for the answer format; the call tags for the tool-call format) plus end-of-turn
(the tokenizer's eos). The format's marker automaton (``ResponseFormat.marker_grammar``) says which marker
may come next after the markers already written (e.g. after ``<think>`` only ``</think>``; end-of-turn
only after ``</answer>``). At each generated position of a reply, the *wrong control mass* is the
probability the policy puts on control tokens whose markers are all illegal there. A control token is
the single token a marker encodes to, or the first token of its encoding when that token is at least two
characters long (``</`` in a byte-level BPE); a one-character first token such as ``<`` is too common to
count and is left out. Positions inside a marker, and positions after the reply has already broken the
grammar, are not scored. ``agentgym.eval.metrics.control_spike_report`` aggregates the masses.

The *tool-call probe* (:func:`tool_probe_sequences`; scored by ``agentgym.eval.diagnostics.tool_call_probe``)
looks at one position only: right after the tool-call opener (``<tool_call>``) at the start of a reply,
where a healthy policy writes the JSON opener ``{"`` and a collapsing one ends the turn or writes the
opener again (the tool-use collapse paper's ``p_lbrace``, ``p_eos``, ``p_repeat_open``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from agentgym.formats import END_OF_TURN, ResponseFormat, ToolCallFormat, get_format


def eos_ids(tokenizer: Any) -> list[int]:
    """The tokenizer's end-of-turn ids (``eos_token_id`` may be one id or a list)."""
    eos = tokenizer.eos_token_id
    return [eos] if isinstance(eos, int) else list(eos or [])


def control_token_ids(tokenizer: Any, fmt: ResponseFormat | str) -> dict[int, set[str]]:
    """Token id -> the control markers that start with it (see the module docstring for the rule)."""
    ids: dict[int, set[str]] = {}
    for marker in get_format(fmt).control_markers():
        encoded = tokenizer.encode(marker, add_special_tokens=False)
        if not encoded:
            continue
        first = encoded[0]
        if len(encoded) == 1 or len(tokenizer.decode([first])) >= 2:
            ids.setdefault(first, set()).add(marker)
    for eos in eos_ids(tokenizer):
        ids.setdefault(eos, set()).add(END_OF_TURN)
    return ids


def prefix_texts(tokenizer: Any, ids: Sequence[int]) -> list[str]:
    """``decode(ids[:t])`` for t = 0..len(ids) (special tokens skipped, as the policy's text)."""
    return [tokenizer.decode(list(ids[:t]), skip_special_tokens=True) for t in range(len(ids) + 1)]


def wrong_control_mass(
    tokenizer: Any,
    fmt: ResponseFormat | str,
    response_ids: Sequence[int],
    probe_probs: np.ndarray | None,
    probe_ids: Sequence[int],
) -> np.ndarray:
    """The wrong control mass at each scorable position of one reply (positions not scored are dropped).

    ``probe_probs[t, k]`` is the probability of ``probe_ids[k]`` at position t (from the scorer, which
    gives None when there are no probe ids).
    """
    if probe_probs is None:
        if probe_ids:
            raise ValueError(f"no probe probabilities for {len(probe_ids)} probe ids")
        probe_probs = np.zeros((len(response_ids), 0))
    grammar = get_format(fmt).marker_grammar()
    markers_of = control_token_ids(tokenizer, fmt)
    eos = set(eos_ids(tokenizer))
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


JSON_OPENER = '{"'  # how every call of a tool-call format starts: {"name": ...} (or {"arguments": ...})
TOOL_PROBE_NAMES = ("lbrace", "eos", "repeat_open")


@dataclass(frozen=True)
class ToolProbe:
    """The token ids of the tool-call probe of one tokenizer and format.

    The probe scores ``opener + X`` for X in the JSON opener, end-of-turn and the opener again. ``head``
    is the part of the opener's tokens that all three texts share: it is appended to each prompt, and
    ``continuations[name]`` are the token sequences scored after it (end-of-turn has one per eos id; the
    probability of a name is the sum over its sequences). When the opener ends on a token boundary in
    all three (a special ``<tool_call>`` token, as in Qwen's tokenizer, or SmolLM2's BPE for ``>{"``),
    ``head`` is the whole opener and each probability is p(X | prompt + opener). When the tokenizer merges
    the opener's last characters with what follows (a byte-level BPE that writes ``>{"`` or ``><`` as
    one token), ``head`` stops at the last boundary the three share and each continuation starts with
    the rest of the opener (``tail``): the probabilities are p(tail + X | prompt + head), the probability
    that the model finishes the opener and writes X, which is what sampling would do there.
    """

    opener: str
    head: list[int]
    tail: str
    continuations: dict[str, list[list[int]]]


def tool_probe_sequences(tokenizer: Any, fmt: ResponseFormat | str) -> ToolProbe:
    """The :class:`ToolProbe` of ``tokenizer`` for a tool-call format (``tool_call`` and its variants)."""
    fmt = get_format(fmt)
    if not isinstance(fmt, ToolCallFormat):
        raise ValueError(f"the tool-call probe needs a tool-call format, got {fmt.name!r}")
    eos = eos_ids(tokenizer)
    if not eos:
        raise ValueError("the tool-call probe needs a tokenizer with an end-of-turn (eos) token")
    opener = f"<{fmt.tag}>"

    def encode(text: str) -> list[int]:
        return list(tokenizer.encode(text, add_special_tokens=False))

    opener_ids = encode(opener)
    full = {
        "lbrace": [encode(opener + JSON_OPENER)],
        "eos": [opener_ids + [e] for e in eos],
        "repeat_open": [encode(opener + opener)],
    }
    cut = len(opener_ids)
    for sequences in full.values():
        for ids in sequences:
            shared = 0
            while shared < min(cut, len(ids)) and ids[shared] == opener_ids[shared]:
                shared += 1
            cut = shared
    continuations = {name: [ids[cut:] for ids in sequences] for name, sequences in full.items()}
    return ToolProbe(opener, opener_ids[:cut], tokenizer.decode(opener_ids[cut:]), continuations)
