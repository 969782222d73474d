// app.js: the page (UI thread). Never blocks: the engine runs in a Web Worker (engine.mjs -> worker.js).
//
// The state rule: a request belongs to the chat that started it. New chat, deleting that chat, loading another
// model or deleting the loaded model abort it (engine.mjs: per-request AbortSignal), and nothing of it reaches the
// new state: its tokens, status line and errors are dropped once `state.run` is no longer that request.
// Model text reaches the DOM only through markdown.js / textContent (never innerHTML).

import {
  listModels, probe, checkModel, createEngine, softwareAdapter, cacheStatus, deleteModelCache,
} from './engine.mjs';
import { describe, checkOptions } from './errors.js';
import { MessageView, statusText } from './chatview.js';
import * as store from './store.js';

const $ = (id) => document.getElementById(id);
const state = {
  models: [], broken: [], adapter: null, engine: null, loadedModel: null, loading: null, ready: false,
  chats: [], chat: null, settings: { ...store.DEFAULT_SETTINGS }, run: null, generating: false,
  lastFinish: null, lastRequest: null, lastTps: null, progressLog: [], views: new Map(),
};
window.__app = state; // for tests and the bench page

const fmtBytes = (n) => (n >= 2 ** 30 ? `${(n / 2 ** 30).toFixed(2)} GiB`
  : n >= 2 ** 20 ? `${(n / 2 ** 20).toFixed(1)} MiB` : `${(n / 1024).toFixed(0)} KiB`);
const SETTINGS = ['temperature', 'top_p', 'top_k', 'max_tokens', 'repetition_penalty'];

// ---- errors and announcements ----

function showError(err) {
  const d = err && err.message && err.kind ? err
    : describe({ kind: err && err.kind, message: err && err.message, hint: err && err.hint, cls: err && err.name });
  // the class name and the raw message: console only
  if (d.cls || d.detail) console.warn(`[engine] ${d.cls || 'Error'}: ${d.detail || d.message}`);
  $('errortext').textContent = d.message;
  state.errorKind = d.kind;
  $('error').classList.add('show');
  $('reload').hidden = !d.reload;
}
function clearError() {
  state.errorKind = null;
  $('errortext').textContent = '';
  $('error').classList.remove('show');
  $('reload').hidden = true;
}
function announce(text) { $('announce').textContent = text; }

// ---- models ----

function selected() { return state.models.find((m) => m.name === $('model').value); }
const label = (m) => m.label || m.display_name || m.name;

function populateModels() {
  const counts = {};
  for (const m of state.models) counts[m.display_name || m.name] = (counts[m.display_name || m.name] || 0) + 1;
  const sel = $('model');
  sel.replaceChildren();
  for (const m of state.models) {
    const dn = m.display_name || m.name;
    m.label = counts[dn] > 1 ? `${dn} (folder ${m.name})` : dn; // two copies of one model: say which folder
    const o = document.createElement('option');
    o.value = m.name;
    o.textContent = `${m.label} · ${fmtBytes(m.bytes)} · ${m.quant}`;
    sel.appendChild(o);
  }
  for (const b of state.broken) {
    const o = document.createElement('option');
    o.value = `broken:${b.name}`;
    o.disabled = true;
    o.textContent = `${b.name} · broken: ${b.broken}`;
    sel.appendChild(o);
  }
  sel.disabled = !state.models.length;
}

async function describeModel() {
  const m = selected();
  $('capability').hidden = true;
  $('confirmdelete').hidden = true;
  if (!m) {
    $('modelinfo').textContent = state.broken.length
      ? `No usable model on this server: ${state.broken.map((b) => `${b.name} is broken (${b.broken})`).join('; ')}.`
      : 'No models on this server yet. Pack one with `python -m weights_tool pack SRC models/NAME`, then reload.';
    $('modelstate').textContent = '';
    $('load').disabled = true;
    $('delete').disabled = true;
    return;
  }
  $('modelinfo').textContent = `${label(m)}: ${fmtBytes(m.bytes)} in ${m.shards} shard(s), ${m.quant}, ` +
    `${m.layers} layers, hidden size ${m.hidden_size}.` +
    (state.broken.length ? ` Not usable: ${state.broken.map((b) => `${b.name} (${b.broken})`).join('; ')}.` : '');
  let problems = [];
  if (state.adapter) {
    problems = checkModel(m, state.adapter);
    if (problems.length) {
      $('capability').hidden = false;
      $('capability').textContent =
        `This model cannot run on this GPU: ${problems.join('; ')}. Nothing was downloaded.`;
    }
  }
  $('load').disabled = !state.adapter || problems.length > 0 || !!state.loading ||
    (state.loadedModel === m.name && !!state.engine); // already loaded
  $('delete').disabled = !!state.loading;
  await refreshModelState(m);
}

async function refreshModelState(m = selected()) {
  if (!m) return null;
  if (state.loadedModel === m.name && state.engine) {
    $('modelstate').textContent = 'Loaded and ready.';
    return null;
  }
  let st = null;
  try { st = await cacheStatus(m.name); } catch (e) { st = null; }
  if (selected() !== m) return st;
  $('modelstate').textContent = !st ? ''
    : st.cached === st.total ? `In this browser's cache (${st.total} of ${st.total} shards): Load needs no download.`
      : st.cached ? `Partly downloaded (${st.cached} of ${st.total} shards): Load fetches the rest.`
        : `Not downloaded yet: Load downloads ${fmtBytes(st.bytes)} once.`;
  return st;
}

function setProgress(id, frac, text) {
  const v = Math.round(Math.max(0, Math.min(1, frac)) * 100);
  $(id).value = v;
  $(id).setAttribute('aria-valuetext', `${v}%: ${text}`);
}

function onProgress(p) {
  $('progress').hidden = false;
  if (p.type === 'warning') { showError(p); return; }
  let t = null;
  if (p.phase === 'download') {
    // nothing fetched from the network so far: this is a load from the cache, not a download
    t = !p.netBytes && p.fromCache === p.shards
      ? `Loading from this browser's cache: ${p.shards} of ${p.nshards} shards verified`
      : `Download: ${fmtBytes(p.bytes)} of ${fmtBytes(p.total)} · shard ${p.shards} of ${p.nshards}` +
        (p.fromCache ? ` (${p.fromCache} from this browser's cache)` : '') +
        (p.netBytes ? ` · ${fmtBytes(p.speed)}/s` : '');
    $('dltext').textContent = t;
    setProgress('dlbar', p.total ? p.bytes / p.total : 1, t);
  } else if (p.phase === 'runtime') {
    t = `Python runtime ready (${(p.ms / 1000).toFixed(1)} s).`;
    $('preptext').textContent = t;
  } else if (p.phase === 'upload') {
    t = `Preparing: uploading weights to the GPU, ${fmtBytes(p.bytes)} of ${fmtBytes(p.total)}`;
    $('preptext').textContent = t;
    setProgress('prepbar', p.total ? 0.5 * p.bytes / p.total : 0, t);
  } else if (p.phase === 'compile') {
    t = p.total ? `Preparing: compiled ${p.done} of ${p.total} shader pipelines`
      : `Preparing: compiled ${p.done} shader pipelines (the total is known after the first load)`;
    $('preptext').textContent = t;
    setProgress('prepbar', p.total ? 0.5 + 0.5 * p.done / p.total : 0.5 + 0.5 * (1 - 1 / (1 + p.done / 8)), t);
  }
  if (t) state.progressLog.push(t);
}

async function loadModel({ auto = false } = {}) {
  const m = selected();
  if (!m || state.loading) return;
  abortRun();
  clearError();
  if (state.engine) { state.engine.unload(); state.engine = null; state.loadedModel = null; }
  setChatEnabled(false);
  updateChip();
  const ctl = new AbortController();
  state.loading = ctl;
  state.progressLog = [];
  $('load').disabled = true;
  $('delete').disabled = true;
  $('model').disabled = true;
  $('cancelload').hidden = false;
  $('progress').hidden = false;
  $('scroller').scrollTop = 0; // the card with the progress is at the top: show it
  setProgress('dlbar', 0, 'starting');
  setProgress('prepbar', 0, 'starting');
  $('dltext').textContent = auto ? `Loading ${label(m)} from this browser's cache (it was your last model)…`
    : 'Checking this browser\'s cache…';
  $('preptext').textContent = 'Starting the Python runtime…';
  announce(`Loading ${label(m)}`);
  try {
    if (navigator.storage && navigator.storage.persist) await navigator.storage.persist().catch(() => false);
    const t0 = performance.now();
    const engine = await createEngine({ model: m.name, onProgress, signal: ctl.signal });
    state.engine = engine;
    engine.onLost = (msg, err) => { // the GPU device is gone: the engine cannot be used any more
      abortRun();
      showError(err);
      if (state.engine === engine) { state.engine = null; state.loadedModel = null; }
      setChatEnabled(false);
      updateChip();
    };
    state.loadedModel = m.name;
    store.setLastModel(m.name);
    const i = engine.info;
    setProgress('dlbar', 1, 'done');
    setProgress('prepbar', 1, 'done');
    $('preptext').textContent = `Ready in ${((performance.now() - t0) / 1000).toFixed(1)} s ` +
      `(${i.download.fromCache} of ${i.download.fromCache + i.download.fromNet} shards from this browser's cache; ` +
      `${i.kernels ?? '?'} shader pipelines).`;
    showAdapter({ ...state.adapter, mode: i.mode || state.adapter.mode });
    if (state.errorKind !== 'quota') clearError(); // "it must be downloaded again next time" stays in view
    setChatEnabled(true);
    setSetupOpen(false);
    renderLog(); // Continue buttons, the empty-chat hint; scrolled to the end
    announce(`${label(m)} is ready`);
    $('prompt').focus();
  } catch (e) {
    if (e.kind === 'aborted') {
      $('dltext').textContent = 'Loading was cancelled.';
      $('preptext').textContent = '';
      announce('Loading cancelled');
    } else showError(e);
  } finally {
    state.loading = null;
    $('cancelload').hidden = true;
    $('model').disabled = !state.models.length;
    updateChip();
    describeModel();
  }
}

function askDelete() {
  const m = selected();
  if (!m) return;
  $('confirmtext').textContent = `Delete ${label(m)} (${fmtBytes(m.bytes)}) from this browser?` +
    (state.loadedModel === m.name ? ' It is loaded now: it will be unloaded.' : '') +
    ' Loading it again downloads it again.';
  $('confirmdelete').hidden = false;
  $('confirmno').focus();
}

async function confirmDelete() {
  const m = selected();
  $('confirmdelete').hidden = true;
  if (!m) return;
  if (state.loadedModel === m.name && state.engine) {
    abortRun();
    state.engine.unload();
    state.engine = null;
    state.loadedModel = null;
    setChatEnabled(false);
    updateChip();
    setSetupOpen(true);
    renderLog();
  }
  try {
    const n = await deleteModelCache(m.name);
    $('progress').hidden = true;
    await describeModel();
    $('modelstate').textContent = `Deleted ${n} cached shard(s) of ${label(m)}. ` + $('modelstate').textContent;
    announce(`Deleted ${label(m)} from this browser`);
  } catch (e) { showError(e); describeModel(); }
}

// ---- the model chip (one line once a model is loaded) ----

function adapterShort() {
  const a = state.engine && state.engine.info.adapter || state.adapter || {};
  const sw = softwareAdapter(state.adapter);
  return sw ? `${sw} (software)` : (a.description || a.architecture || a.vendor || 'GPU');
}

function updateChip() {
  const m = state.models.find((x) => x.name === state.loadedModel);
  const chip = $('chip');
  const sw = softwareAdapter(state.adapter);
  if (sw) softwareWarning(sw, !!(m && state.engine)); // once loaded, the warning shrinks to one line
  if (!m || !state.engine) { chip.hidden = true; setSetupOpen(true); return; }
  chip.hidden = false;
  chip.textContent = `${label(m)} · ${fmtBytes(m.bytes)} · ${adapterShort()} · ` +
    `${state.lastTps ? state.lastTps.toFixed(1) : '–'} tokens/s`;
  chip.title = 'Model details, switch or delete the model';
}

function setSetupOpen(open) {
  const loaded = !!state.engine;
  $('setup').hidden = loaded && !open;
  $('chip').setAttribute('aria-expanded', String(!$('setup').hidden));
}

// ---- chats ----

function persist() {
  if (!store.saveState({ chats: state.chats, currentId: state.chat && state.chat.id, settings: state.settings }) &&
      !state.warnedStorage) {
    state.warnedStorage = true;
    showError({ kind: 'quota', message: 'This browser refused to save your chats (storage full or private mode): ' +
      'they will be lost on reload.' });
  }
  renderChatList();
}

function renderChatList() {
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

function renderLog() {
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

function newChat() {
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

// ---- settings ----

function settingRanges() {
  const r = {};
  for (const k of SETTINGS) {
    const inp = $(k);
    r[k] = { label: document.querySelector(`label[for="${k}"]`).textContent.replace(/\s*\(.*\)$/, ''),
      min: +inp.min, max: +inp.max, int: !!inp.dataset.int, minOpen: !!inp.dataset.minOpen };
  }
  return r;
}

// The settings as numbers, or null after marking every bad field (aria-invalid + its sentence).
function readSettings() {
  const values = {};
  for (const k of SETTINGS) { const v = $(k).value.trim(); values[k] = v === '' ? NaN : Number(v); }
  const bad = checkOptions(values, settingRanges());
  for (const k of SETTINGS) {
    const b = bad.find((x) => x.name === k);
    $(k).setAttribute('aria-invalid', String(!!b));
    $(`${k}-err`).textContent = b ? b.message : '';
  }
  if (bad.length) return { bad };
  return { values };
}

function onSettingsChange() {
  const { values } = readSettings();
  if (values) Object.assign(state.settings, values);
  if (values && state.errorKind === 'settings') clearError(); // the fields say it already; fixed now
  state.settings.system = $('system').value;
  persist();
}

function showSettings(s) {
  for (const k of SETTINGS) $(k).value = String(s[k]);
  $('system').value = s.system;
  readSettings();
}

// ---- a reply ----

function setChatEnabled(on) {
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

function nearBottom() {
  const s = $('scroller');
  return s.scrollHeight - s.scrollTop - s.clientHeight < 80;
}
function scrollToEnd(force = false) {
  const s = $('scroller');
  if (force || state.stick) s.scrollTop = s.scrollHeight;
}

// End the current request: it is aborted in the worker and nothing more of it reaches the page.
function abortRun() {
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

function options() {
  const s = state.settings;
  return { temperature: s.temperature, top_p: s.top_p, top_k: s.top_k, max_tokens: s.max_tokens,
    repetition_penalty: s.repetition_penalty };
}

function validSettings() {
  const r = readSettings();
  if (!r.bad) { Object.assign(state.settings, r.values); return true; }
  $('settings').open = true;
  showError({ kind: 'settings',
    message: `${r.bad.map((b) => b.message).join(' ')} Fix it under Settings, then send again.` });
  $(r.bad[0].name).focus();
  return false;
}

async function send(ev) {
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

function stop() {
  if (state.run) state.run.ctl.abort(); // the worker stops between two tokens; the reply ends as "stopped"
}

// ---- adapter ----

function showAdapter(a) {
  if (!a) return;
  // browsers hide adapter details unless asked (privacy): say so rather than "unknown"
  const name = [a.vendor, a.architecture, a.description].filter(Boolean).join(' ') ||
    'GPU (name hidden by the browser)';
  const sw = softwareAdapter(a);
  $('where').textContent = sw ? 'chat (software renderer)' : 'chat on your GPU';
  $('software').hidden = !sw;
  if (sw) softwareWarning(sw, false);
  state.adapterTitle = `WebGPU adapter: ${name}\nmode: ${a.mode}`;
  $('chip').title = state.adapterTitle;
}

// measured: the 3-layer test model decodes at about 0.7-0.9 token/s on SwiftShader (tests/test_browser.py)
function softwareWarning(sw, short) {
  $('software').textContent = short
    ? `Software renderer (${sw}): replies will run below 1 token/s.`
    : `This browser gives WebGPU only a software renderer (${sw}): the model runs on the CPU through an emulated GPU ` +
      'and will run below 1 token/s. For usable speed open this page in a browser with hardware WebGPU (a recent ' +
      'Chrome or Edge with a working GPU driver).';
}

function autoGrow() {
  const p = $('prompt');
  p.style.height = 'auto';
  p.style.height = `${Math.min(p.scrollHeight, 160)}px`;
}

// ---- start ----

async function autoLoad() {
  const last = store.lastModel();
  const m = state.models.find((x) => x.name === last);
  if (!m || !state.adapter || checkModel(m, state.adapter).length) return;
  let st;
  try { st = await cacheStatus(m.name); } catch (e) { return; }
  if (st.cached !== st.total || state.engine || state.loading) return;
  $('model').value = m.name;
  await loadModel({ auto: true });
}

async function init() {
  $('load').addEventListener('click', () => loadModel());
  $('cancelload').addEventListener('click', () => state.loading && state.loading.abort());
  $('delete').addEventListener('click', askDelete);
  $('confirmyes').addEventListener('click', confirmDelete);
  $('confirmno').addEventListener('click', () => { $('confirmdelete').hidden = true; $('delete').focus(); });
  $('model').addEventListener('change', describeModel);
  $('composer').addEventListener('submit', send);
  $('stop').addEventListener('click', stop);
  $('newchat').addEventListener('click', newChat);
  $('chip').addEventListener('click', () => {
    setSetupOpen($('setup').hidden);
    if (!$('setup').hidden) $('scroller').scrollTop = 0;
  });
  $('reload').addEventListener('click', () => location.reload());
  $('resetsettings').addEventListener('click', () => { showSettings(store.DEFAULT_SETTINGS); onSettingsChange(); });
  for (const k of SETTINGS) $(k).addEventListener('input', onSettingsChange);
  $('system').addEventListener('input', onSettingsChange);
  $('scroller').addEventListener('scroll', () => { state.stick = nearBottom(); }, { passive: true });
  $('prompt').addEventListener('input', autoGrow);
  $('prompt').addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) { e.preventDefault(); $('composer').requestSubmit(); }
    if (e.key === 'Escape' && state.generating) stop();
  });
  // the Chats / Settings dropdowns close on a click elsewhere or Escape, like any menu
  document.addEventListener('pointerdown', (e) => {
    for (const d of document.querySelectorAll('details.menu[open]')) if (!d.contains(e.target)) d.open = false;
  });
  document.addEventListener('keydown', (e) => {
    if (e.key !== 'Escape') return;
    for (const d of document.querySelectorAll('details.menu[open]')) {
      d.open = false;
      d.querySelector('summary').focus();
    }
  });
  addEventListener('pagehide', abortRun); // a reply cut by leaving the page is kept, marked "stopped"
  if ('serviceWorker' in navigator) navigator.serviceWorker.register('./sw.js').catch(() => {});

  const saved = store.loadState();
  state.chats = saved.chats;
  state.settings = saved.settings;
  showSettings(state.settings);
  state.chat = state.chats.find((c) => c.id === saved.currentId) || null;
  if (!state.chat) newChat(); else { renderLog(); renderChatList(); }

  try {
    state.adapter = await probe();
    showAdapter(state.adapter);
  } catch (e) {
    $('where').textContent = 'chat (no WebGPU here)';
    // probe() throws the adapter pick's own error (kind no-webgpu): described like every other error
    showError(describe({ kind: e.kind || 'no-webgpu', message: e.message, hint: e.hint, cls: e.name }));
  }
  try {
    const all = await listModels({ includeBroken: true });
    state.models = all.filter((m) => !m.broken);
    state.broken = all.filter((m) => m.broken);
  } catch (e) {
    showError(e);
  }
  populateModels();
  const preferred = state.models.find((m) => m.name === store.lastModel()) ||
    state.models.find((m) => m.name.startsWith('smollm2'));
  if (preferred) $('model').value = preferred.name;
  await describeModel();
  renderLog();
  state.ready = true;
  const q = new URLSearchParams(location.search);
  if (q.get('bench')) {
    runBench(q.get('bench'), +(q.get('prompt') || 128), +(q.get('tokens') || 128)).catch(
      (e) => postBench({ error: `${e.name}: ${e.message}` }));
  } else {
    autoLoad();
  }
}

// ---- bench mode: /?bench=MODEL&prompt=P&tokens=N (figures POSTed to the server's /api/bench) ----

async function postBench(report) {
  await fetch('./api/bench', { method: 'POST', headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ ...report, adapter: state.adapter, userAgent: navigator.userAgent }) }).catch(() => {});
}

async function runBench(model, promptLen, tokens) {
  $('model').value = model;
  const t0 = performance.now();
  state.engine = await createEngine({ model, onProgress });
  const loadS = (performance.now() - t0) / 1000;
  const V = 1000; // ids well inside any Llama-3 family vocabulary
  const prompt = Array.from({ length: promptLen }, (_, i) => 1 + ((i * 7919) % V));
  await state.engine.completeIds({ prompt_ids: prompt.slice(0, 8), max_tokens: 8, temperature: 0 }); // warm-up
  const runs = [];
  for (let r = 0; r < 3; r++) {
    const { ids, stats } = await state.engine.completeIds({ prompt_ids: prompt, max_tokens: tokens, temperature: 0 });
    runs.push({ n: ids.length, ...stats });
  }
  const best = (k) => Math.max(...runs.map((x) => x[k]));
  const report = { model, prompt_tokens: promptLen, max_tokens: tokens, load_s: loadS, info: state.engine.info, runs,
    decode_tokens_per_s: best('decode_tokens_per_s'), prefill_tokens_per_s: best('prefill_tokens_per_s') };
  state.bench = report;
  $('modelstate').textContent = `bench: decode ${report.decode_tokens_per_s.toFixed(1)} tok/s, prefill ` +
    `${report.prefill_tokens_per_s.toFixed(1)} tok/s`;
  await postBench(report);
}

init();
