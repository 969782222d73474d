"""Chat prompts from the model's own jinja2 chat template, as transformers' ``apply_chat_template``.

transformers compiles a chat template in an ``ImmutableSandboxedEnvironment(trim_blocks=True,
lstrip_blocks=True)`` with the ``loopcontrols`` extension and a ``{% generation %}`` tag, replaces
the ``tojson`` filter (no HTML escaping, ``ensure_ascii=False``, ``indent`` / ``separators`` /
``sort_keys`` options) and adds the globals ``raise_exception``, ``strftime_now``, a plain ``dict``
and a ``namespace`` that refuses underscore names. It then renders with ``messages`` (None-valued
keys dropped, reasoning fields aliased), ``tools``, ``documents``, ``add_generation_prompt`` and the
named special tokens (``bos_token``, ``eos_token``, ...) as strings. This module does the same, so
the prompt text (and, through ``driver.tokenizer`` with ``add_special_tokens=False``, the ids) equal
transformers' (tests/data/chat_goldens.json, made by tests/golden/make_chat_goldens.py).

Pure Python + jinja2 (which ships to the browser with the driver).
"""

from __future__ import annotations

import json
from datetime import datetime
from functools import lru_cache

import jinja2
from jinja2.ext import Extension, loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment

__all__ = ["ChatTemplate", "ChatTemplateError", "render_chat", "SPECIAL_TOKEN_KEYS"]

# transformers' SPECIAL_TOKENS_ATTRIBUTES: passed to the template as strings when set.
SPECIAL_TOKEN_KEYS = (
    "bos_token",
    "eos_token",
    "unk_token",
    "sep_token",
    "pad_token",
    "cls_token",
    "mask_token",
)
_REASONING_FIELDS = ("reasoning_content", "thinking", "reasoning")


class ChatTemplateError(ValueError):
    """A chat template that does not compile, raised ``raise_exception``, or bad messages."""

    kind = "chat-template"
    hint = "Check the messages (roles and order); the model's chat template refused them."


# ---- the jinja2 environment (transformers' _compile_jinja_template) ----


class _Generation(Extension):
    """``{% generation %}...{% endgeneration %}`` (assistant-mask marker): renders its body."""

    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return jinja2.nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

    def _body(self, caller):
        return caller()


def _raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)


def _tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    # jinja2's own tojson escapes <, >, & and ' for HTML; chat templates want plain JSON
    return json.dumps(
        x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )


def _strftime_now(fmt):
    return datetime.now().strftime(fmt)


class _TemplateDict:
    """``dict(...)`` for templates without exposing the dict type itself."""

    def __call__(self, *args, **kwargs):
        return dict(*args, **kwargs)

    def fromkeys(self, *args, **kwargs):
        return dict.fromkeys(*args, **kwargs)


class _Namespace(jinja2.utils.Namespace):
    """jinja2's namespace, refusing underscore-prefixed attributes (no reaching into internals)."""

    def __init__(*args, **kwargs):
        self, args = args[0], args[1:]
        attrs = dict(*args, **kwargs)
        for name in attrs:
            _Namespace._check(name)
        jinja2.utils.Namespace.__init__(self, attrs)

    def __setitem__(self, name, value):
        _Namespace._check(name)
        jinja2.utils.Namespace.__setitem__(self, name, value)

    @staticmethod
    def _check(name):
        if isinstance(name, str) and name.startswith("_"):
            raise jinja2.exceptions.SecurityError(
                "chat templates cannot store underscore-prefixed attributes on a namespace, "
                f"got {name!r}"
            )


@lru_cache(maxsize=16)
def _compile(template: str) -> jinja2.Template:
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[_Generation, loopcontrols]
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    env.globals["dict"] = _TemplateDict()
    env.globals["namespace"] = _Namespace
    try:
        return env.from_string(template)
    except jinja2.TemplateSyntaxError as e:
        raise ChatTemplateError(
            f"chat template does not compile: {e.message} (template line {e.lineno})"
        ) from None


# ---- template inputs ----


def _plain(value):
    """A fresh copy of JSON types only: the template can neither reach rich objects nor edit
    the caller's data."""
    if value is None or type(value) in (str, int, float, bool):
        return value
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, int):
        return int.__int__(value)
    if isinstance(value, float):
        return float.__float__(value)
    if isinstance(value, dict):
        return {_plain(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_plain(v) for v in value)
    return f"<{type(value).__name__}>"


def _messages(messages) -> list[dict]:
    if not isinstance(messages, (list, tuple)) or not messages:
        raise ChatTemplateError(
            "messages must be a non-empty list of {'role': ..., 'content': ...} dicts"
        )
    out = []
    for m in messages:
        if not isinstance(m, dict):
            raise ChatTemplateError(f"chat messages must be dicts, got {m!r}")
        m = {
            k: v for k, v in _plain(m).items() if v is not None
        }  # transformers drops None-valued keys
        reasoning = next((m[k] for k in _REASONING_FIELDS if m.get(k) is not None), None)
        if reasoning is not None:
            m = {"thinking": reasoning, **m, "reasoning_content": reasoning}
        out.append(m)
    return out


def render_chat(
    messages,
    template: str,
    *,
    bos_token: str | None = None,
    eos_token: str | None = None,
    add_generation_prompt: bool = True,
    tools=None,
    documents=None,
    **extra,
) -> str:
    """The prompt text for ``messages`` (list of {"role", "content"}) through ``template``.

    ``extra`` reaches the template as variables (other special tokens, ``date_string``, ...); like
    transformers, they override the special tokens. Tokenize the result with
    ``add_special_tokens=False``: the template writes BOS itself where the model wants it.
    """
    variables = {
        k: v for k, v in (("bos_token", bos_token), ("eos_token", eos_token)) if v is not None
    }
    variables.update(extra)
    try:
        return _compile(template).render(
            messages=_messages(messages),
            tools=_plain(tools),
            documents=_plain(documents),
            add_generation_prompt=add_generation_prompt,
            **_plain(variables),
        )
    except jinja2.TemplateError as e:
        raise ChatTemplateError(
            f"chat template error: {e.message if hasattr(e, 'message') else e}"
        ) from None


class ChatTemplate:
    """A model's chat template plus the special-token strings it is rendered with."""

    def __init__(self, template: str, special_tokens: dict[str, str] | None = None):
        if not isinstance(template, str) or not template:
            raise ChatTemplateError("chat template must be a non-empty string")
        self.template = template
        self.special_tokens = dict(special_tokens or {})
        _compile(template)  # fail at load time, not at the first message

    @classmethod
    def from_tokenizer_config(cls, path_or_dict, name: str | None = None) -> "ChatTemplate":
        """From ``tokenizer_config.json`` (path or parsed dict).

        Its ``chat_template`` (a string, or named
        templates as a dict / list of {"name", "template"}; ``name`` picks one, else "default") and
        the named
        special tokens (strings or {"content": ...} objects)."""
        if isinstance(path_or_dict, dict):
            conf, where = path_or_dict, "tokenizer config"
        else:
            where = str(path_or_dict)
            try:
                with open(path_or_dict, encoding="utf-8") as f:
                    conf = json.load(f)
            except OSError as e:
                raise ChatTemplateError(f"{where}: cannot read ({e.strerror})") from None
            except json.JSONDecodeError as e:
                raise ChatTemplateError(f"{where}: not valid JSON ({e})") from None
        template = conf.get("chat_template") if isinstance(conf, dict) else None
        if isinstance(template, list):
            template = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
        if isinstance(template, dict):
            key = name or "default"
            if key not in template:
                raise ChatTemplateError(
                    f"{where}: no chat template named {key!r} (have {sorted(template)})"
                )
            template = template[key]
        if not isinstance(template, str) or not template:
            raise ChatTemplateError(
                f"{where}: has no chat_template; the model cannot be used for chat"
            )
        special = {}
        for key in SPECIAL_TOKEN_KEYS:
            value = conf.get(key)
            if isinstance(value, dict):
                value = value.get("content")
            if isinstance(value, str):
                special[key] = value
        return cls(template, special)

    def render(self, messages, add_generation_prompt: bool = True, **extra) -> str:
        """Prompt text for ``messages``; ``extra`` as in ``render_chat``."""
        variables = {**self.special_tokens, **extra}
        return render_chat(
            messages, self.template, add_generation_prompt=add_generation_prompt, **variables
        )

    def encode(self, tokenizer, messages, add_generation_prompt: bool = True, **extra) -> list[int]:
        """Prompt ids as ``apply_chat_template(..., tokenize=True)``: text encoded, no added BOS."""
        return tokenizer.encode(
            self.render(messages, add_generation_prompt, **extra), add_special_tokens=False
        )
