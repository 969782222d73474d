"""The Llama-3 runtime on WebGPU: pure Python over a small async GPU interface (runs in Pyodide).

``Engine`` is imported lazily so that ``import driver`` stays light (Pyodide start-up). The
native-only half (wgpu-py backend, CLIs, bench, numpy reference) lives in ``driver.native``.
"""

__all__ = ["Engine"]


def __getattr__(name):
    if name == "Engine":
        from .engine import Engine
        return Engine
    raise AttributeError(name)
