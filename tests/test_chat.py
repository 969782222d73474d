"""driver.chat against transformers' apply_chat_template (goldens in tests/data/chat_goldens.json).

The goldens (tests/golden/make_chat_goldens.py, oracle venv) hold the rendered text and the ids for
the Llama-3 Instruct template, SmolLM2's ChatML template (read from the GGUF) and a feature template
exercising the environment transformers sets up (trim/lstrip blocks, loopcontrols, namespace, dict,
tojson, generation tag, tools, raise_exception). Text must be identical; ids through
driver.tokenizer must equal the oracle's.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from pathlib import Path

import pytest

from driver.chat import ChatTemplate, ChatTemplateError, render_chat
from driver.tokenizer import Tokenizer

GOLDENS = json.loads(
    (Path(__file__).parent / "data" / "chat_goldens.json").read_text(encoding="utf-8")
)
CASES = GOLDENS["cases"]


def _case_id(c: dict) -> str:
    return f"{c['model']}-{c['name']}-{'gen' if c['add_generation_prompt'] else 'nogen'}" + (
        "-tools" if c.get("tools") else ""
    )


@pytest.fixture(scope="module")
def tokenizers(llama3_tokenizer_json, default_model_dir) -> dict[str, Tokenizer]:
    llama = Tokenizer.from_file(llama3_tokenizer_json)
    return {"llama3": llama, "features": llama, "smollm2": Tokenizer.from_folder(default_model_dir)}


def test_goldens_cover_the_models():
    models = {c["model"] for c in CASES}
    assert models == {"llama3", "smollm2", "features"}
    assert all(c["text"] and c["ids"] for c in CASES)
    assert any(c["add_generation_prompt"] for c in CASES) and any(
        not c["add_generation_prompt"] for c in CASES
    )


@pytest.mark.parametrize("case", CASES, ids=[_case_id(c) for c in CASES])
def test_render_matches_transformers(case, tokenizers):
    template = GOLDENS["templates"][case["model"]]
    special = GOLDENS["special_tokens"]["llama3" if case["model"] == "features" else case["model"]]
    text = render_chat(
        case["messages"],
        template,
        add_generation_prompt=case["add_generation_prompt"],
        tools=case.get("tools"),
        **special,
    )
    assert text == case["text"]
    ids = tokenizers[case["model"]].encode(text, add_special_tokens=False)
    assert ids == case["ids"]


def test_templates_from_the_model_files(
    llama3_tokenizer_dir, default_model_dir, smollm2_gguf, tokenizers
):
    """The templates the driver loads (fetched config, packed model) are the goldens' ones."""
    llama = ChatTemplate.from_tokenizer_config(llama3_tokenizer_dir / "tokenizer_config.json")
    assert llama.template == GOLDENS["templates"]["llama3"]
    assert llama.special_tokens == GOLDENS["special_tokens"]["llama3"]
    smol = ChatTemplate.from_tokenizer_config(default_model_dir / "tokenizer_config.json")
    assert smol.template == GOLDENS["templates"]["smollm2"]
    for key in ("bos_token", "eos_token"):
        assert smol.special_tokens[key] == GOLDENS["special_tokens"]["smollm2"][key]
    for case in CASES:
        if case["model"] in ("llama3", "smollm2"):
            tmpl = llama if case["model"] == "llama3" else smol
            assert tmpl.render(case["messages"], case["add_generation_prompt"]) == case["text"]
            assert (
                tmpl.encode(
                    tokenizers[case["model"]], case["messages"], case["add_generation_prompt"]
                )
                == case["ids"]
            )


def test_raise_exception_reaches_the_caller():
    err = GOLDENS["error_case"]
    assert err["error"] == "TemplateError: Unknown role: robot"
    with pytest.raises(ChatTemplateError, match="Unknown role: robot"):
        render_chat(
            err["messages"], GOLDENS["templates"]["features"], bos_token="<s>", eos_token="</s>"
        )


def test_strftime_now_and_extra_variables():
    out = render_chat(
        [{"role": "user", "content": "x"}],
        "{{ strftime_now('%Y-%m') }}|{{ date_string }}|{{ bos_token }}",
        bos_token="B",
        date_string="26 Jul 2024",
    )
    assert re.fullmatch(r"\d{4}-\d{2}\|26 Jul 2024\|B", out)
    assert out.split("|")[0] == datetime.now().strftime("%Y-%m")


def test_messages_are_not_modified_and_sandbox_holds():
    messages = [{"role": "user", "content": "hi"}]
    with pytest.raises(
        ChatTemplateError, match="unsafe"
    ):  # immutable sandbox: no mutation of the passed data
        render_chat(messages, "{{ messages[0].update({'content': 'x'}) }}")
    assert messages == [{"role": "user", "content": "hi"}]
    with pytest.raises(ChatTemplateError, match="unsafe"):  # no reaching into Python internals
        render_chat(messages, "{{ messages.__class__.__mro__ }}")
    with pytest.raises(ChatTemplateError, match="underscore"):
        render_chat(messages, "{% set ns = namespace(_x=1) %}")


@pytest.mark.parametrize(
    "conf, message",
    [
        ({}, "has no chat_template"),
        (
            {"chat_template": [{"name": "tool_use", "template": "x"}]},
            "no chat template named 'default'",
        ),
        ({"chat_template": "{% if %}"}, "does not compile"),
    ],
)
def test_bad_configs_are_refused(conf, message):
    with pytest.raises(ChatTemplateError, match=message):
        ChatTemplate.from_tokenizer_config(conf)


def test_named_templates_and_token_objects():
    conf = {
        "chat_template": [
            {"name": "default", "template": "{{ bos_token }}{{ messages[0]['content'] }}"},
            {"name": "rag", "template": "R"},
        ],
        "bos_token": {"content": "<s>", "lstrip": False},
        "eos_token": "</s>",
    }
    t = ChatTemplate.from_tokenizer_config(conf)
    assert t.render([{"role": "user", "content": "hi"}]) == "<s>hi"
    assert (
        ChatTemplate.from_tokenizer_config(conf, name="rag").render(
            [{"role": "user", "content": ""}]
        )
        == "R"
    )


def test_bad_messages_are_refused():
    for bad in ([], "hello", [["user", "hi"]]):
        with pytest.raises(ChatTemplateError):
            render_chat(bad, "{{ messages }}")
