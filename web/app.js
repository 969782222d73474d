// app.js: the page (UI thread). Never blocks: the engine runs in a Web Worker (engine.mjs -> worker.js).
//
// The state rule: a request belongs to the chat that started it. New chat, deleting that chat, loading another
// model or deleting the loaded model abort it (engine.mjs: per-request AbortSignal), and nothing of it reaches the
// new state: its tokens, status line and errors are dropped once `state.run` is no longer that request.
// Model text reaches the DOM only through markdown.js / textContent (never innerHTML).
//
// The page's parts, each importing only those before it: ui.js (shared state, errors, chip), settings.js (the
// settings form), chats.js (chat list, persistence, a reply's life), models.js (the model card); this file wires
// the events, starts the page and runs the bench mode.

import { listModels, probe, createEngine } from './engine.mjs';
import { describe } from './errors.js';
import * as store from './store.js';
import { $, state, showError, clearError, setSetupOpen, showAdapter, autoGrow, nearBottom } from './ui.js';
import { SETTINGS, readSettings, showSettings } from './settings.js';
import { persist, renderChatList, renderLog, newChat, abortRun, send, stop } from './chats.js';
import {
  populateModels, describeModel, onProgress, loadModel, askDelete, confirmDelete, autoLoad,
} from './models.js';

// settings are saved with the chats (store.js) on every change
function onSettingsChange() {
  const { values } = readSettings();
  if (values) Object.assign(state.settings, values);
  if (values && state.errorKind === 'settings') clearError(); // the fields say it already; fixed now
  state.settings.system = $('system').value;
  persist();
}

// ---- start ----

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
