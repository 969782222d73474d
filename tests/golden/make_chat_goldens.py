"""Chat-template goldens from the oracle, HF transformers' ``apply_chat_template``.

Run with the oracle venv:

    .oracle-venv/bin/python tests/golden/make_chat_goldens.py

Writes ``tests/data/chat_goldens.json``: for the Llama-3 Instruct template (the fetched
tokenizer_config.json, tokenizer = the fetched tokenizer.json) and SmolLM2's ChatML template (read
from the GGUF's ``tokenizer.chat_template`` with ``gguf.GGUFReader``; tokenizer = transformers' own
GGUF conversion, so independent of weights_tool's), several conversations rendered with and without
the generation prompt: the text (``tokenize=False``) and the ids (``tokenize=True``).
tests/test_chat.py compares driver.chat and driver.tokenizer with them. Nothing of the project is
imported.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "tests" / "data" / "chat_goldens.json"
CACHE = Path(os.environ.get("LLAMA3_WEBGPU_CACHE", ROOT / ".cache")) / "data"
GGUF = CACHE / "smollm2" / "SmolLM2-135M-Instruct.Q4_1.gguf"
LLAMA3 = CACHE / "llama3-tokenizer"

CONVERSATIONS = {
    "user": [{"role": "user", "content": "What is the capital of France?"}],
    "system_user": [
        {"role": "system", "content": "You are a terse assistant. Answer in one word."},
        {"role": "user", "content": "Name a primary colour."},
    ],
    "multi_turn": [
        {"role": "system", "content": "You are helpful."},
        {"role": "user", "content": "Hi! Who are you?"},
        {"role": "assistant", "content": "I am an assistant. How can I help?"},
        {"role": "user", "content": "Write a haiku about the sea.\nMake it calm."},
    ],
    "unicode": [
        {
            "role": "user",
            "content": "Traduis «bonjour» en 日本語, русский и العربية 👋🏽 — e\u0301 ß",
        }
    ],
    "whitespace": [
        {"role": "user", "content": "  padded with spaces and newlines \n\n"},
        {"role": "assistant", "content": "\tok\t"},
        {"role": "user", "content": "code:\n```python\ndef f(x):\n    return x * 2\n```\n"},
    ],
    "special_text": [
        {"role": "user", "content": "What does <|eot_id|> or <|im_end|> mean in a prompt?"}
    ],
    "none_key": [{"role": "user", "content": "Hello", "name": None}],
}


# Not a model's template: exercises what transformers' environment adds or configures (trim_blocks
# and lstrip_blocks around indented tags, loopcontrols, namespace, dict(), the tojson override with
# indent and non-ASCII, {% generation %}, tools, raise_exception) so the goldens pin those too.
# Tokenized with Llama-3's.
FEATURES_TEMPLATE = """{{- bos_token }}
{%- set ns = namespace(system='', count=0) %}
{%- for m in messages %}
    {%- if m['role'] == 'system' %}
        {%- set ns.system = m['content'] | trim %}
        {%- continue %}
    {%- endif %}
    {%- if m['role'] == 'stop' %}{% break %}{% endif %}
    {%- set ns.count = ns.count + 1 %}
{% endfor %}
{% if ns.system %}
  <sys>{{ ns.system }}</sys>
{% endif %}
{% if tools is not none %}
<tools>
{{ tools | tojson(indent=2) }}
</tools>
{% endif %}
{% for m in messages if m['role'] != 'system' %}
    {% if m['role'] not in ['user', 'assistant', 'stop'] %}
        {{ raise_exception('Unknown role: ' + m['role']) }}
    {% endif %}
    {% if m['role'] == 'stop' %}{% break %}{% endif %}
    {% set meta = dict(n=loop.index, last=loop.last) %}
<|start_header_id|>{{ m['role'] }}<|end_header_id|> {{ meta | tojson }}
    {% if m['role'] == 'assistant' %}
{% generation %}{{ m['content'] }}{% endgeneration %}{{ eos_token }}
    {% else %}
{{ m['content'] }}<|eot_id|>
    {% endif %}
{% endfor %}
{{ ns.count }} messages; {{ {'q': '"<&>"', 'ü': 'ω'} | tojson }}
{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"""

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Météo d'une ville",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
]


def _gguf_template(path: Path) -> str:
    import gguf

    field = gguf.GGUFReader(str(path)).fields["tokenizer.chat_template"]
    return bytes(field.parts[field.data[0]]).decode("utf-8")


def main() -> int:
    import jinja2
    import transformers
    from transformers import AutoTokenizer

    for need in (GGUF, LLAMA3 / "tokenizer.json", LLAMA3 / "tokenizer_config.json"):
        if not need.is_file():
            print(
                f"error: {need} missing; run the setup first (python -m weights_tool fetch)",
                file=sys.stderr,
            )
            return 2
    llama = AutoTokenizer.from_pretrained(str(LLAMA3))
    smol = AutoTokenizer.from_pretrained(str(GGUF.parent), gguf_file=GGUF.name)
    templates = {"llama3": llama.chat_template, "smollm2": _gguf_template(GGUF)}
    if smol.chat_template not in (None, templates["smollm2"]):
        print("error: transformers' GGUF chat template differs from GGUFReader's", file=sys.stderr)
        return 2
    templates["features"] = FEATURES_TEMPLATE
    tokenizers = {"llama3": llama, "smollm2": smol, "features": llama}
    conversations = dict(
        CONVERSATIONS,
        stop_early=[
            {"role": "user", "content": "one"},
            {"role": "stop", "content": ""},
            {"role": "user", "content": "two"},
        ],
    )

    cases = []
    for model, tok in tokenizers.items():
        for name, messages in conversations.items():
            if name == "stop_early" and model != "features":
                continue
            for gen in (True, False):
                for tools in (None, TOOLS) if model == "features" else (None,):
                    kw = dict(
                        chat_template=templates[model], add_generation_prompt=gen, tools=tools
                    )
                    text = tok.apply_chat_template(messages, tokenize=False, **kw)
                    ids = tok.apply_chat_template(messages, tokenize=True, return_dict=True, **kw)[
                        "input_ids"
                    ]
                    cases.append(
                        {
                            "model": model,
                            "name": name,
                            "add_generation_prompt": gen,
                            "tools": tools,
                            "messages": messages,
                            "text": text,
                            "ids": list(ids),
                        }
                    )
    try:
        llama.apply_chat_template(
            [{"role": "robot", "content": "x"}], chat_template=FEATURES_TEMPLATE, tokenize=False
        )
        error = None
    except Exception as e:  # the oracle's own exception type and message, whatever it is
        error = f"{type(e).__name__}: {e}"
    data = {
        "meta": {
            "oracle": f"transformers {transformers.__version__}, jinja2 {jinja2.__version__}",
            "made_by": "tests/golden/make_chat_goldens.py",
            "template_sha256": {
                k: hashlib.sha256(v.encode()).hexdigest() for k, v in templates.items()
            },
        },
        "templates": templates,
        "special_tokens": {k: dict(t.special_tokens_map) for k, t in tokenizers.items()},
        "cases": cases,
        "error_case": {
            "model": "features",
            "messages": [{"role": "robot", "content": "x"}],
            "error": error,
        },
    }
    OUT.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {OUT} ({len(cases)} cases)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
