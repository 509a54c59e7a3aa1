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
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from agentgym.formats import END_OF_TURN, ResponseFormat, get_format


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
