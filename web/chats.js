// chats.js: the conversation: the chat list and its persistence (store.js), the message log, and a reply's life
// (send, Continue, Stop, abort). The state rule (app.js) is kept here: `state.run` is the one request whose
// tokens, status line and errors may reach the page.

import { MessageView, statusText } from './chatview.js';
import * as store from './store.js';
import {
  $, state, showError, clearError, announce, updateChip, nearBottom, scrollToEnd, autoGrow,
} from './ui.js';
import { options, validSettings } from './settings.js';

// ---- chats ----

export function persist() {
  if (!store.saveState({ chats: state.chats, currentId: state.chat && state.chat.id, settings: state.settings }) &&
      !state.warnedStorage) {
    state.warnedStorage = true;
    showError({ kind: 'quota', message: 'This browser refused to save your chats (storage full or private mode): ' +
      'they will be lost on reload.' });
  }
  renderChatList();
}

export function renderChatList() {
  const list = $('chatlist');
  list.replaceChildren();
  const chats = state.chats.filter((c) => c.messages.length).sort((a, b) => b.updated - a.updated);
  $('chatcount').textContent = chats.length ? `(${chats.length})` : '';
  if (!chats.length) {
    const li = document.createElement('li');
    li.className = 'muted';
    li.textContent = 'No saved chats yet.';
    list.appendChild(li);
  }
  for (const c of chats) {
    const li = document.createElement('li');
    const open = document.createElement('button');
    open.type = 'button';
    open.className = 'open';
    open.textContent = store.titleOf(c);
    if (state.chat && c.id === state.chat.id) open.setAttribute('aria-current', 'true');
    open.addEventListener('click', () => { openChat(c.id); $('chatsmenu').open = false; });
    const del = document.createElement('button');
    del.type = 'button';
    del.className = 'del';
    del.textContent = 'Delete';
    del.setAttribute('aria-label', `Delete chat: ${store.titleOf(c)}`);
    del.addEventListener('click', () => deleteChat(c.id));
    li.append(open, del);
    list.appendChild(li);
  }
}

export function renderLog() {
  const log = $('log');
  log.replaceChildren();
  state.views = new Map();
  const msgs = state.chat ? state.chat.messages : [];
  if (!msgs.length) {
    const p = document.createElement('p');
    p.className = 'empty muted';
    p.textContent = state.engine ? 'Ask anything. Replies are written on this machine; chats are kept in this browser.'
      : 'Pick a model above and load it to start chatting.';
    log.appendChild(p);
  }
  msgs.forEach((msg, k) => {
    const v = new MessageView(msg, { onContinue: continueReply });
    state.views.set(msg, v);
    if (msg.meta) v.setMeta(msg.meta, k === msgs.length - 1 && !!state.engine);
    log.appendChild(v.el);
  });
  scrollToEnd(true);
}

function openChat(id) {
  if (state.chat && state.chat.id === id) return;
  abortRun();
  state.chat = state.chats.find((c) => c.id === id) || null;
  if (!state.chat) { newChat(); return; }
  renderLog();
  persist();
}

export function newChat() {
  abortRun();
  if (!state.chat || state.chat.messages.length) {
    state.chat = { id: store.newId(), title: '', updated: Date.now(), messages: [] };
    state.chats.push(state.chat);
  }
  renderLog();
  persist();
  if (!$('prompt').disabled) $('prompt').focus();
}

function deleteChat(id) {
  if (state.chat && state.chat.id === id) abortRun();
  state.chats = state.chats.filter((c) => c.id !== id);
  if (!state.chat || state.chat.id === id) {
    state.chat = null;
    newChat();
  } else persist();
}

// ---- a reply ----

export function setChatEnabled(on) {
  const p = $('prompt');
  p.disabled = !on;
  p.placeholder = on ? 'Message (Enter sends)' : 'Load a model to start'; // short: one line on a phone
  p.title = on ? 'Enter sends, Shift+Enter starts a new line, Escape stops a reply' : '';
  $('send').disabled = !on || state.generating;
  $('send').hidden = state.generating;
  $('stop').hidden = !state.generating;
  $('stop').disabled = !state.generating;
  if (state.chat && !state.generating) renderMetaButtons();
}

function renderMetaButtons() {
  const msgs = state.chat.messages;
  msgs.forEach((msg, k) => {
    const v = state.views.get(msg);
    if (v && msg.meta) v.setMeta(msg.meta, k === msgs.length - 1 && !!state.engine);
  });
}

// End the current request: it is aborted in the worker and nothing more of it reaches the page.
export function abortRun() {
  const run = state.run;
  if (!run) return;
  state.run = null;
  run.ctl.abort();
  if (run.msg.content) {
    run.msg.meta = { ...(run.msg.meta || {}), finish: 'abort' };
    run.chat.updated = Date.now();
  } else {
    run.chat.messages = run.chat.messages.filter((x) => x !== run.msg); // never keep an empty reply
  }
  state.generating = false;
  persist();
  if (state.chat === run.chat) renderLog();
  setChatEnabled(!!state.engine);
}

async function runReply(run, messages, opts) {
  const { view, msg } = run;
  const stillMine = () => state.run === run;
  let first = true, frame = 0, removed = false;
  const t0 = performance.now();
  const before = msg.content;
  try {
    // a long prompt is read in chunks: the worker reports each one (driver.session), the page says how far it is
    const onPrefill = ({ done, total }) => {
      if (!stillMine() || !first) return;
      const text = `Reading the prompt: ${done} of ${total} tokens…`;
      if (msg.content) view.meta.textContent = text; else view.setPending(text);
    };
    const stream = await state.engine.chat.completions.create({
      messages, stream: true, signal: run.ctl.signal, onPrefill, ...opts });
    for await (const chunk of stream) {
      if (!stillMine()) return;
      const c = chunk.choices[0];
      if (c.delta && c.delta.content) {
        if (first) { first = false; announce('The assistant is writing a reply'); } // text replaces the pending line
        msg.content += c.delta.content;
        if (!frame) {
          frame = requestAnimationFrame(() => { frame = 0; if (stillMine()) { view.update(); scrollToEnd(); } });
        }
      }
      if (c.finish_reason) {
        const u = chunk.usage;
        const prev = opts.continue_final_message ? (msg.meta || {}) : {};
        msg.meta = {
          finish: c.finish_reason, prompt_tokens: u.prompt_tokens,
          completion_tokens: (prev.completion_tokens || 0) + u.completion_tokens,
          ttft_s: u.extra.ttft_s || (performance.now() - t0) / 1000, decode_tokens_per_s: u.extra.decode_tokens_per_s,
          ...(u.prompt_tokens_details ? { cached_tokens: u.prompt_tokens_details.cached_tokens } : {}),
          ...(u.extra.truncated_turns != null ? { truncated_turns: u.extra.truncated_turns } : {}),
          // prompt lookup ran (in this part or an earlier part of a continued reply): its drafted tokens, and how
          // many the model kept; a Continue without speculation keeps the earlier part's counts
          ...(u.extra.speculative || prev.drafted != null ? {
            drafted: (prev.drafted || 0) + ((u.extra.speculative || {}).drafted || 0),
            accepted: (prev.accepted || 0) + ((u.extra.speculative || {}).accepted || 0) } : {}),
        };
        state.lastFinish = c.finish_reason;
        if (u.extra.decode_tokens_per_s) state.lastTps = u.extra.decode_tokens_per_s;
      }
    }
    if (!stillMine()) return;
    clearError();
    view.setPending('');
    view.update();
    const tail = msg.content.slice(before.length).trim();
    announce(`Assistant (${statusText({ finish: msg.meta && msg.meta.finish })}): ${tail.slice(0, 300)}`);
  } catch (e) {
    if (!stillMine()) return;
    showError(e);
    if (!msg.content) { // never an empty bubble: the exchange goes, the words go back into the box
      removed = true;
      run.chat.messages = run.chat.messages.filter((x) => x !== msg && x !== run.userMsg);
      if (run.userMsg && !$('prompt').value) $('prompt').value = run.userMsg.content; // give the words back
    } else if (msg.content === before) {
      msg.meta = { ...(msg.meta || {}) }; // a failed Continue leaves the reply as it was
    } else msg.meta = { ...(msg.meta || {}), finish: 'error' };
  } finally {
    if (stillMine()) {
      state.run = null;
      state.generating = false;
      run.chat.updated = Date.now();
      persist();
      if (removed) renderLog();
      else { view.setStreaming(false); view.update(); }
      setChatEnabled(!!state.engine);
      updateChip();
    }
  }
}

function startRun(msg, userMsg) {
  const view = state.views.get(msg) || new MessageView(msg, { onContinue: continueReply });
  const run = { chat: state.chat, msg, userMsg, view, ctl: new AbortController() };
  state.run = run;
  state.generating = true;
  state.lastFinish = null;
  setChatEnabled(true);
  return run;
}

function requestMessages(chat, upTo = chat.messages.length) {
  const system = state.settings.system.trim();
  return (system ? [{ role: 'system', content: system }] : [])
    .concat(chat.messages.slice(0, upTo).map((m) => ({ role: m.role, content: m.content })));
}

export async function send(ev) {
  ev.preventDefault();
  const text = $('prompt').value.trim();
  if (!text || !state.engine || state.generating || !validSettings()) return;
  $('prompt').value = '';
  autoGrow();
  const chat = state.chat;
  const userMsg = { role: 'user', content: text };
  const msg = { role: 'assistant', content: '' };
  if (!chat.messages.length) $('log').replaceChildren(); // the empty-chat hint goes
  chat.messages.push(userMsg, msg);
  const uv = new MessageView(userMsg);
  $('log').appendChild(uv.el);
  const run = startRun(msg, userMsg);
  state.views.set(msg, run.view);
  run.view.setPending('Reading your prompt…');
  run.view.setStreaming(true);
  $('log').appendChild(run.view.el);
  state.stick = true;
  scrollToEnd(true);
  announce('Reading your prompt');
  const messages = requestMessages(chat, chat.messages.length - 1);
  state.lastRequest = { messages, options: options() };
  persist();
  await runReply(run, messages, options());
}

// Continue a reply cut at max tokens: the same chat, the partial reply sent back as the assistant's turn to extend.
async function continueReply(msg) {
  const chat = state.chat;
  if (!state.engine || state.generating || chat.messages[chat.messages.length - 1] !== msg || !validSettings()) return;
  const run = startRun(msg, null);
  run.view.setStreaming(true);
  run.view.setMeta({ finish: '' });
  run.view.meta.textContent = 'Continuing…'; // the conversation so far is in the KV cache: only new tokens are read
  state.stick = nearBottom();
  announce('Continuing the reply');
  const messages = requestMessages(chat);
  state.lastRequest = { messages, options: options(), continue: true };
  await runReply(run, messages, { ...options(), continue_final_message: true });
}

export function stop() {
  if (state.run) state.run.ctl.abort(); // the worker stops between two tokens; the reply ends as "stopped"
}

