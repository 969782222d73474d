"""The model format: the ground floor every other package stands on.

``formats`` (weight bit layouts, part sizes, canonical tensor names), ``config`` (``ModelConfig``,
the one frozen config dataclass), ``manifest`` (read, validate, write, row-block rule,
requirements), ``presets`` (named model shapes) and ``quantize`` (the numpy quantization
reference: native only, the one module here that imports numpy). Standard library only
otherwise; nothing here imports ``driver``, ``shaders`` or ``weights_tool``.
"""
