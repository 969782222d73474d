// chatview.js: the DOM of one message (pure view: no engine, no storage).
//
// A message is an <article class="msg user|assistant"> named "You" / "Assistant" for assistive tech, with a .body
// (user text as typed, through textContent; assistant text through markdown.js, which builds DOM nodes only) and, under
// a reply, a .meta status line: prompt tokens (and cached ones when the engine reports them), time to the first
// token, tokens/s, with speculative decoding how many drafted tokens were accepted, and how it ended ("finished",
// "stopped", "cut at max tokens — Continue").

import { StreamRenderer } from './markdown.js';

const FINISH = {
  stop: 'finished',
  abort: 'stopped',
  length: 'cut at max tokens',
  error: 'interrupted by an error',
};

export function finishText(reason) { return FINISH[reason] || reason || ''; }

const fmt = (x, d = 1) => (Number.isFinite(x) ? x.toFixed(d) : '–');

// The status line's words for a reply's meta ({finish, prompt_tokens, cached_tokens?, completion_tokens, ttft_s,
// decode_tokens_per_s, truncated_turns?, drafted?, accepted?}; drafted/accepted: speculative decoding ran).
export function statusText(meta) {
  const parts = [];
  if (meta.prompt_tokens) {
    parts.push(`${meta.prompt_tokens} prompt tokens` + (meta.cached_tokens != null ? ` (${meta.cached_tokens} cached)` : ''));
  }
  if (meta.truncated_turns) parts.push(`${meta.truncated_turns} oldest turns left out to fit`);
  if (meta.completion_tokens != null) parts.push(`${meta.completion_tokens} tokens`);
  if (meta.ttft_s) parts.push(`first token ${fmt(meta.ttft_s, 2)} s`);
  if (meta.decode_tokens_per_s) parts.push(`${fmt(meta.decode_tokens_per_s)} tokens/s`);
  if (meta.drafted != null) parts.push(`${meta.accepted} of ${meta.drafted} drafted tokens accepted`);
  if (meta.finish) parts.push(finishText(meta.finish));
  return parts.join(' · ');
}

export class MessageView {
  constructor(msg, { onContinue = null } = {}) {
    this.msg = msg;
    this.onContinue = onContinue;
    const a = document.createElement('article');
    a.className = `msg ${msg.role}`;
    a.setAttribute('aria-label', msg.role === 'user' ? 'You' : 'Assistant');
    this.body = document.createElement('div');
    this.body.className = 'body';
    a.appendChild(this.body);
    this.el = a;
    if (msg.role === 'user') {
      this.body.textContent = msg.content; // as typed, never HTML
    } else {
      this.renderer = new StreamRenderer(this.body);
      this.meta = document.createElement('p');
      this.meta.className = 'meta';
      a.appendChild(this.meta);
      this.update();
      this.setMeta(msg.meta || null);
      if (!msg.content && msg.meta) this.setPending('(the model ended its reply without any text)');
    }
  }

  // Re-render the reply's text (incremental: only changed blocks are rebuilt).
  update() {
    if (this.msg.role === 'user') return;
    if (this.pending && this.msg.content) { this.pending.remove(); this.pending = null; }
    this.renderer.update(this.msg.content);
  }

  // "Reading your prompt…" until the first token (never an empty bubble).
  setPending(text) {
    if (!text) { if (this.pending) this.pending.remove(); this.pending = null; return; }
    if (!this.pending) {
      this.pending = document.createElement('p');
      this.pending.className = 'pending';
      this.body.appendChild(this.pending);
    }
    this.pending.textContent = text;
  }

  setStreaming(on) {
    this.el.classList.toggle('streaming', on);
    if (on) this.body.setAttribute('aria-busy', 'true');
    else this.body.removeAttribute('aria-busy');
  }

  // The status line; `canContinue` adds the Continue button to a reply cut at max tokens.
  setMeta(meta, canContinue = false) {
    if (!this.meta) return;
    this.meta.replaceChildren();
    if (!meta) { this.meta.hidden = true; return; }
    this.meta.hidden = false;
    this.meta.appendChild(document.createTextNode(statusText(meta)));
    if (meta.finish === 'length' && canContinue && this.onContinue) {
      this.meta.appendChild(document.createTextNode(' — '));
      const b = document.createElement('button');
      b.type = 'button';
      b.className = 'continue';
      b.textContent = 'Continue';
      b.setAttribute('aria-label', 'Continue this reply');
      b.addEventListener('click', () => this.onContinue(this.msg));
      this.meta.appendChild(b);
    }
  }
}
