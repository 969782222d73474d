"""weights_tool: turn a Llama-3-family checkpoint (HF safetensors folder or GGUF) into web shards.

Subcommands (``python -m weights_tool ...``): pack, verify, inspect, bench, synth, fetch.
Importable API: ``open_source``, ``quantize``/``dequantize``, ``pack``, ``verify``, ``PackError``.
Submodules are imported lazily so ``import weights_tool`` stays cheap.
"""

from __future__ import annotations

__all__ = ["PackError", "open_source", "quantize", "dequantize", "pack", "verify"]


def __getattr__(name):
    if name == "PackError":
        from .errors import PackError
        return PackError
    if name == "open_source":
        from .source import open_source
        return open_source
    if name in ("quantize", "dequantize"):
        from . import quantize as q
        return getattr(q, name)
    if name == "pack":
        from .pack import pack
        return pack
    if name == "verify":
        from .verify import verify
        return verify
    raise AttributeError(name)
