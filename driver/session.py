"""A conversation with a loaded model: THE request path (``Engine.chat``, the CLI, the page's worker).

Pure Python (runs in Pyodide). One request::

    {"messages": [{"role", "content"}, ...]} | {"prompt": text} | {"prompt_ids": [...]},
    "options": {max_tokens, temperature, top_k, top_p, repetition_penalty, seed, ignore_eos,
                speculative, draft_k},
    "continue_final_message": bool (messages only: the last message is a partial assistant reply
                                    to extend, e.g. one cut at max_tokens: the page's Continue)

  -> options: ``Options()`` defaults <- the manifest's ``generation`` section <- the request's
     (None means unset), validated, the same in every caller (``resolve_options``)
  -> prompt ids: the chat template (messages; the oldest whole turns dropped when history + the
     new turn + max_tokens exceed the context, never the system prompt; continue_final_message:
     the turns before the partial reply with the generation prompt, then the reply's tokens with
     no end of turn, as transformers' apply_chat_template(continue_final_message=True) leaves
     it open), the tokenizer (prompt), or the ids as given
  -> generation with KV-cache reuse: ``Engine.generate_async(reuse=True)`` prefills only after
     the longest common prefix with the ids whose K/V are in the cache (``Engine.kv_ids``), in
     paced chunks that a cancel can stop between (or ``driver.speculative`` when asked)
  -> streamed (id, text) pieces
  -> ``last_stats``: prompt_tokens, cached_tokens, prefill_tokens, completion_tokens, ttft_s,
     prefill_tokens_per_s, decode_tokens_per_s, finish_reason (stop | length | abort),
     truncated_turns, dispatches_per_token, kv_tokens (ids the cache now holds) (+ speculative:
     drafted, accepted, acceptance_rate, verify_passes, decode_steps).

A failed request (bad input, a message that cannot fit) raises before any GPU work and leaves the
session and the cache as they were; the conversation state a caller keeps (``ChatSession.say``)
takes the new turn only once it succeeded.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, fields

from .loader import ContextOverflow
from .sampler import BadOption, Sampling

ROLES = ("system", "user", "assistant", "tool")
SPECULATIVE = ("off", "lookup", "draft")
MAX_DRAFT_K = 15   # driver.speculative.MAX_DRAFT_K (not imported: it loads on use)
# when turns must be dropped, drop until a quarter of the context is free again (where the newest
# turn allows): the next turns then keep the same prompt start, so their prefix stays cached
HEADROOM = 4

__all__ = ["ChatSession", "Options", "resolve_options", "ContextOverflow", "BadOption"]


@dataclass(frozen=True)
class Options:
    max_tokens: int = 256
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    seed: int = 0
    ignore_eos: bool = False          # generate max_tokens whatever the model says (benches)
    speculative: str = "off"          # off | lookup (prompt lookup) | draft (a draft model)
    draft_k: int = 4                  # drafted tokens verified per target pass

    def sampling(self) -> Sampling:
        return Sampling(self.temperature, self.top_k, self.top_p, self.repetition_penalty,
                        self.seed)


_INTS = {"max_tokens", "top_k", "seed", "draft_k"}
_FLOATS = {"temperature", "top_p", "repetition_penalty"}
# manifest "generation" keys that are defaults of an option
_FROM_MANIFEST = ("temperature", "top_k", "top_p", "repetition_penalty")


def _coerce(name: str, v):
    if name in _INTS:
        if isinstance(v, float) and v.is_integer():
            v = int(v)       # JSON from JavaScript: 64 may arrive as 64.0
        if not isinstance(v, int) or isinstance(v, bool):
            raise BadOption(f"option {name} must be an integer, got {v!r}")
    elif name in _FLOATS:
        if not isinstance(v, (int, float)) or isinstance(v, bool):
            raise BadOption(f"option {name} must be a number, got {v!r}")
        v = float(v)
    elif name == "ignore_eos":
        if not isinstance(v, bool):
            raise BadOption(f"option ignore_eos must be true or false, got {v!r}")
    elif name == "speculative":
        if v not in SPECULATIVE:
            raise BadOption(f"option speculative must be one of {', '.join(SPECULATIVE)}, "
                            f"got {v!r}")
    return v


def resolve_options(generation: dict | None, given: dict | None, max_context: int) -> Options:
    """``Options()`` <- the manifest's ``generation`` defaults <- ``given`` (None values unset),
    validated: one plain-words ``BadOption`` for the first bad value or unknown name."""
    known = {f.name for f in fields(Options)}
    vals: dict = {}
    for k in _FROM_MANIFEST:
        v = (generation or {}).get(k)
        if v is not None:
            vals[k] = v
    if given is not None and not isinstance(given, dict):
        raise BadOption(f"options must be an object of option values, got {type(given).__name__}")
    for k, v in (given or {}).items():
        if k not in known:
            raise BadOption(f"unknown option {k!r}; known: {', '.join(sorted(known))}")
        if v is not None:
            vals[k] = v
    vals = {k: _coerce(k, v) for k, v in vals.items()}
    # the default reply length leaves room for a prompt in small contexts
    vals.setdefault("max_tokens", min(Options.max_tokens, max(1, max_context // 2)))
    o = Options(**vals)
    o.sampling()   # range checks of the sampling values (BadOption)
    if not 1 <= o.max_tokens <= max_context:
        raise BadOption(f"max_tokens must be in [1, {max_context}] (the context this model was "
                        f"loaded with), got {o.max_tokens}")
    if not 1 <= o.draft_k <= MAX_DRAFT_K:
        raise BadOption(f"draft_k must be in [1, {MAX_DRAFT_K}], got {o.draft_k}")
    return o


def check_messages(messages, cont: bool = False) -> list[dict]:
    """Plain {role, content} copies of ``messages``, or one BadOption saying what is wrong where
    (``cont``: continue_final_message, the last message must be the assistant's)."""
    if not isinstance(messages, (list, tuple)) or not messages:
        raise BadOption("messages must be a non-empty list of {role, content} objects")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise BadOption(f"messages[{i}] must be an object with 'role' and 'content', "
                            f"got {m!r:.80}")
        if m["role"] not in ROLES:
            raise BadOption(f"messages[{i}] has the unknown role {m['role']!r}; use one of "
                            f"{', '.join(ROLES)}")
        if not isinstance(m["content"], str):
            raise BadOption(f"messages[{i}].content must be a string, got "
                            f"{type(m['content']).__name__}")
        out.append({"role": m["role"], "content": m["content"]})
    if cont and out[-1]["role"] != "assistant":
        raise BadOption("continue_final_message needs the partial assistant reply as the last "
                        "message")
    if not cont and out[-1]["role"] not in ("user", "tool"):
        raise BadOption("the last message must be the user's (the reply is generated after it)")
    return out


def split_turns(messages: list[dict]) -> tuple[list[dict], list[list[dict]]]:
    """(leading system messages, turns): a turn is a user message and what follows it up to the
    next user message (anything before the first user message is a turn of its own)."""
    i = 0
    while i < len(messages) and messages[i]["role"] == "system":
        i += 1
    head, turns = messages[:i], []
    for m in messages[i:]:
        if m["role"] == "user" or not turns:
            turns.append([m])
        else:
            turns[-1].append(m)
    return head, turns


def _overflow(what: str, n: int, ctx: int, max_tokens: int) -> ContextOverflow:
    return ContextOverflow(
        f"{what} is {n:,} tokens; this model holds {ctx:,} with the reply (max_tokens "
        f"{max_tokens:,}): shorten it or lower max_tokens")


class ChatSession:
    """Requests to one engine (and its KV cache), optionally with a draft model for speculative
    decoding. ``stream_async`` is the core (the browser worker awaits it); ``stream`` / ``chat``
    / ``say`` are native sync wrappers over the engine's event loop."""

    def __init__(self, engine, draft=None, reuse: bool = True):
        self.engine, self.reuse = engine, reuse
        self.draft = None
        if draft is not None:
            from .speculative import check_draft
            check_draft(engine, draft)
            self.draft = draft
        self.history: list[dict] = []    # say(): the conversation so far (system prompt first)
        self.last_stats: dict = {}
        self.last_prompt_ids: list[int] = []
        self._sticky: tuple = ((), 0)    # (messages kept before the cut, turns dropped)
        self._cancel = False

    # ---- request -> prompt ids ----
    def _encode(self, messages: list[dict], cont: bool = False) -> list[int]:
        """Prompt ids of ``messages``; ``cont``: the last one (a partial assistant reply) left
        open after the generation prompt of the ones before it."""
        from .chat import ChatTemplateError
        try:
            if cont:
                tail = self.engine.tokenizer().encode(messages[-1]["content"],
                                                      add_special_tokens=False)
                return self.engine.chat_ids(messages[:-1]) + tail
            return self.engine.chat_ids(messages)
        except ChatTemplateError as e:
            raise BadOption(str(e)) from None

    def _fit(self, messages: list[dict], max_tokens: int,
             cont: bool = False) -> tuple[list[int], int]:
        """Prompt ids of ``messages`` with the oldest whole turns dropped until the prompt plus
        ``max_tokens`` fits the context; (ids, turns dropped)."""
        ctx = self.engine.max_context
        head, turns = split_turns(messages)
        flat = lambda d: head + [m for t in turns[d:] for m in t]  # noqa: E731
        key, d0 = self._sticky
        # the turns dropped last time stay dropped while the conversation starts the same way:
        # the prompt's start, and so the cached prefix, does not move every turn
        d0 = d0 if d0 < len(turns) and tuple(_key(m) for m in flat(0)[:len(key)]) == key else 0
        ids = self._encode(flat(d0), cont)
        if len(ids) + max_tokens <= ctx:
            return ids, d0
        best = None
        for d in range(d0 + 1, len(turns)):
            ids = self._encode(flat(d), cont)
            if len(ids) + max_tokens <= ctx - ctx // HEADROOM:
                best = (ids, d)
                break
            if best is None and len(ids) + max_tokens <= ctx:
                best = (ids, d)
        if best is None:
            if len(turns) > 1 or d0 > 0:
                ids = self._encode(flat(len(turns) - 1), cont)
            raise _overflow("your message" + (" with the system prompt" if head else ""),
                            len(ids), ctx, max_tokens)
        ids, d = best
        self._sticky = (tuple(_key(m) for m in head + [m for t in turns[:d] for m in t]), d)
        return ids, d

    def _prompt(self, req: dict, opts: Options):
        """(ids, turns dropped, StreamDecoder or None) of a request."""
        from .tokenizer import StreamDecoder
        eng = self.engine
        kinds = [k for k in ("messages", "prompt", "prompt_ids") if req.get(k) is not None]
        if len(kinds) != 1:
            raise BadOption("a request needs exactly one of messages, prompt or prompt_ids")
        cont = bool(req.get("continue_final_message"))
        if cont and kinds[0] != "messages":
            raise BadOption("continue_final_message needs messages (the partial assistant reply "
                            "last)")
        if kinds[0] == "prompt_ids":
            ids = req["prompt_ids"]
            if not isinstance(ids, (list, tuple)) or not ids or not all(
                    isinstance(i, int) and not isinstance(i, bool)
                    and 0 <= i < eng.cfg.vocab_size for i in ids):
                raise BadOption(f"prompt_ids must be a non-empty list of token ids in "
                                f"[0, {eng.cfg.vocab_size})")
            ids, dropped, dec = [int(i) for i in ids], 0, None
        elif kinds[0] == "prompt":
            if not isinstance(req["prompt"], str) or not req["prompt"]:
                raise BadOption("prompt must be a non-empty string")
            ids = eng.tokenizer().encode(req["prompt"], add_special_tokens=True)
            dropped, dec = 0, StreamDecoder(eng.tokenizer(), skip_special_tokens=True)
        else:
            ids, dropped = self._fit(check_messages(req["messages"], cont), opts.max_tokens,
                                     cont)
            dec = StreamDecoder(eng.tokenizer(), skip_special_tokens=True)
        if kinds[0] != "messages" and len(ids) + opts.max_tokens > eng.max_context:
            raise _overflow("the prompt", len(ids), eng.max_context, opts.max_tokens)
        return ids, dropped, dec

    # ---- generation ----
    def cancel(self) -> None:
        """Stop the running request before its next prefill chunk or token (thread-safe flag)."""
        self._cancel = True
        self.engine.cancel()

    async def stream_async(self, request: dict, should_stop=None, on_prefill=None):
        """Async iterator of (id, text) for ``request`` (id -1: text flushed at the end);
        ``should_stop()`` is polled between prefill chunks and tokens; ``on_prefill(done,
        total)`` after each prefill chunk but the last. Stats: ``last_stats``."""
        t0 = time.perf_counter()
        self._cancel = False
        if not isinstance(request, dict):
            raise BadOption("a request must be an object with messages, prompt or prompt_ids")
        eng = self.engine
        opts = resolve_options(eng.manifest.get("generation"), request.get("options"),
                               eng.max_context)
        if opts.speculative == "draft" and self.draft is None:
            raise BadOption("speculative 'draft' needs a draft model loaded with this one "
                            "(same tokenizer); use 'lookup' or load a draft model")
        ids, dropped, dec = self._prompt(request, opts)
        self.last_prompt_ids = ids
        stop_fn = lambda: self._cancel or bool(should_stop is not None and should_stop())  # noqa
        stop_ids = () if opts.ignore_eos else None
        samp = opts.sampling()
        kw = dict(temperature=samp.temperature, top_k=samp.top_k, top_p=samp.top_p,
                  repetition_penalty=samp.repetition_penalty, seed=samp.seed, stop_ids=stop_ids,
                  reuse=self.reuse, should_stop=stop_fn, on_chunk=on_prefill)
        if opts.speculative == "off":
            agen = eng.generate_async(ids, opts.max_tokens, **kw)
        else:
            from .speculative import generate_speculative
            agen = generate_speculative(eng, ids, opts.max_tokens, opts.draft_k,
                                        opts.speculative, draft=self.draft, **kw)
        n, t_first, closed = 0, None, True
        try:
            async for tok in agen:
                if t_first is None:
                    t_first = time.perf_counter()
                n += 1
                yield tok, (dec.push(tok) if dec else "")
            closed = False
        finally:
            await agen.aclose()
            self.last_stats = self._stats(eng.last_stats, n, t0, t_first, dropped, closed, opts)
        rest = dec.flush() if dec else ""
        if rest:
            yield -1, rest

    def _stats(self, st: dict, n: int, t0: float, t_first, dropped: int, closed: bool,
               opts: Options) -> dict:
        stopped = st.get("stopped")
        finish = ("abort" if stopped == "cancel" or closed or self._cancel else
                  "stop" if stopped == "stop" else "length")
        pre_n = st.get("prefill_tokens", 0)
        pre_s, dec_s = st.get("prefill_s") or 0.0, st.get("decode_s") or 0.0
        out = {"prompt_tokens": st.get("prompt_tokens", 0),
               "cached_tokens": st.get("cached_tokens", 0), "prefill_tokens": pre_n,
               "completion_tokens": n, "finish_reason": finish, "truncated_turns": dropped,
               "ttft_s": (t_first - t0) if t_first else 0.0,
               "prefill_tokens_per_s": pre_n / pre_s if pre_s else 0.0,
               "decode_tokens_per_s": (st.get("generated", n) - 1) / dec_s if dec_s else 0.0,
               "dispatches_per_token": st.get("dispatches_per_token", 0),
               "decode_ms_per_step": self._step_ms(st),
               "kv_tokens": len(self.engine.kv_ids)}   # what the cache holds for the next one
        if opts.speculative != "off":
            out["speculative"] = dict(st.get("speculative") or {})
        return out

    @staticmethod
    def _step_ms(st: dict) -> dict:
        """Decode's wall time per step (ms) split into recording + submitting the steps
        (``submit``: Python, and in the page the JS encode), awaiting the sampled ids (``wait``:
        the GPU, or whatever feeds it, is behind) and the ``rest`` (detokenizing, streaming)."""
        steps = st.get("generated", 0) - 1
        if steps < 1 or not st.get("decode_s") or "decode_submit_s" not in st:
            return {}   # no decode step yet, or speculative rounds (not split this way)
        sub, wait = st.get("decode_submit_s", 0.0), st.get("decode_wait_s", 0.0)
        return {k: round(1e3 * v / steps, 4) for k, v in
                (("submit", sub), ("wait", wait), ("rest", st["decode_s"] - sub - wait))}

    # ---- native sync wrappers ----
    def stream(self, request: dict):
        """Sync iterator of (id, text) (native: runs on the engine's event loop)."""
        agen = self.stream_async(request)
        run = self.engine._run
        try:
            while True:
                try:
                    item = run(agen.__anext__())
                except StopAsyncIteration:
                    return
                yield item
        finally:
            run(agen.aclose())

    def chat(self, messages, **options):
        """Sync iterator of the text pieces of the reply to ``messages``."""
        for _, text in self.stream({"messages": messages, "options": options}):
            if text:
                yield text

    def say(self, text: str, system: str | None = None, on_text=None, **options) -> str:
        """One turn of a conversation kept here (``on_text(piece)`` as the reply streams):
        ``history`` gets the user message and the reply only once the reply is done (a refused
        or failed turn is not kept)."""
        head = [{"role": "system", "content": system}] if system and not self.history else []
        msgs = self.history + head + [{"role": "user", "content": text}]
        pieces = []
        for piece in self.chat(msgs, **options):
            pieces.append(piece)
            if on_text is not None:
                on_text(piece)
        reply = "".join(pieces)
        self.history = msgs + [{"role": "assistant", "content": reply}]
        return reply


def _key(m: dict) -> tuple:
    return (m["role"], m["content"])
