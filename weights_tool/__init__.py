"""weights_tool: turn a Llama-3-family checkpoint (HF safetensors folder or GGUF) into web shards.

Subcommands (``python -m weights_tool ...``): pack, verify, inspect, bench, synth, fetch.
Importable API (submodules, imported on demand so ``import weights_tool`` stays cheap):
  weights_tool.source     SourceTensor, Source, open_source(path), check_tensor_set(...)
  modelfmt.quantize   quantize(w, fmt, G), dequantize(parts, fmt, rows, cols, G)
  weights_tool.pack       pack(src, out, quant=..., ...) -> PackSummary
  weights_tool.verify     verify(out) -> list[str]
  weights_tool.errors     PackError(file, problem, hint)
"""
