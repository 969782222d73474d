"""The Llama-3 runtime on WebGPU: pure Python over a small async GPU interface.

``Engine`` is imported lazily so that ``driver.config`` / ``driver.formats`` stay importable with no
GPU stack (weights_tool, Pyodide start-up).
"""

__all__ = ["Engine"]


def __getattr__(name):
    if name == "Engine":
        from .engine import Engine
        return Engine
    raise AttributeError(name)
