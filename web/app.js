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

import { listModels, probe, createEngine, runKernelCheck } from './engine.mjs';
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
  if (q.get('check')) {
    runCheck(q.getAll('op'), q.get('matrix') === '0').catch((e) => {
      state.check = { error: `${e.name}: ${e.message}` };
      showError(e);
      return postCheck(state.check);
    });
  } else if (q.get('bench') && q.get('ttft')) {
    runTtftBench(q.get('bench'), +q.get('ttft')).catch((e) => postBench({ error: `${e.name}: ${e.message}` }));
  } else if (q.get('bench')) {
    runBench(q.get('bench'), +(q.get('prompt') || 128), +(q.get('tokens') || 128), q.get('decode') || 'default',
      +(q.get('runs') || 5), q.get('matrix') === '0', q.get('profile') === '1').catch(
      (e) => postBench({ error: `${e.name}: ${e.message}` }));
  } else {
    autoLoad();
  }
}

// ---- bench mode: /?bench=MODEL&prompt=P&tokens=N[&decode=split][&runs=R][&matrix=0][&profile=1] (figures POSTed to
// /api/bench; profile=1 adds the GPU time by op and weight shape, driver/profile.py;
// matrix=0: the device opened without chromium-experimental-subgroup-matrix, prefill on the FMA tiles) ----
// decode=split: the decode program with split-K attention at every context and the final norm in its own
// dispatch (more dispatches than the default; faster natively on the H200): both are measured in the page.
// decode=deep: the default program with 6 steps in flight instead of 3 (DecodeOptions.depth).
// decode=noxq: the default program with every int8-x kernel quantizing x itself (no quant_x dispatches);
// decode=allxq: quant_x for every input, not only those read by >= DecodeOptions.xq_min_weights weights.
const DECODE_PROGRAMS = { default: null, split: { short_ctx: 0, head_norm: false }, deep: { depth: 6 },
  noxq: { xq: false }, allxq: { xq_min_weights: 0 } };

async function postBench(report) {
  await fetch('./api/bench', { method: 'POST', headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ ...report, adapter: state.adapter, userAgent: navigator.userAgent }) }).catch(() => {});
}

async function runBench(model, promptLen, tokens, program = 'default', nRuns = 5, noMatrix = false, profile = false) {
  $('model').value = model;
  if (!Object.hasOwn(DECODE_PROGRAMS, program)) throw new Error(`decode=${program}: one of ${Object.keys(DECODE_PROGRAMS)}`);
  const t0 = performance.now();
  state.engine = await createEngine({ model, onProgress, decode: DECODE_PROGRAMS[program], noMatrix });
  const loadS = (performance.now() - t0) / 1000;
  const V = 1000; // ids well inside any Llama-3 family vocabulary
  // a different first id per run: no run reuses another's KV cache (driver.session's prefix reuse), so each one
  // prefills the whole prompt, as the native side (Engine.generate) does
  const prompt = (r) => Array.from({ length: promptLen }, (_, i) => 1 + ((i * 7919 + r * 104729) % V));
  // warm-up at full length: the first runs in a fresh page are slower while V8 tiers the Pyodide interpreter's
  // WebAssembly up (measured on an H200: best-of-3 runs kept rising, 597 -> 699 -> 813 tok/s)
  await state.engine.completeIds({ prompt_ids: prompt(nRuns), max_tokens: tokens, temperature: 0 });
  const runs = [];
  for (let r = 0; r < nRuns; r++) {
    const { ids, stats } = await state.engine.completeIds({ prompt_ids: prompt(r), max_tokens: tokens, temperature: 0 });
    runs.push({ n: ids.length, ...stats });
  }
  const best = (k) => Math.max(...runs.map((x) => x[k]));
  const report = { model, decode_program: program, matrix: !noMatrix, prompt_tokens: promptLen, max_tokens: tokens,
    load_s: loadS,
    info: state.engine.info, runs,
    decode_tokens_per_s: best('decode_tokens_per_s'), prefill_tokens_per_s: best('prefill_tokens_per_s') };
  // profile=1: the GPU time of each op and weight shape, prefill of the prompt's length and decode at its context
  if (profile) report.profile = await state.engine.profile({ prompt: promptLen, ctx: promptLen });
  state.bench = report;
  $('modelstate').textContent = `bench: decode ${report.decode_tokens_per_s.toFixed(1)} tok/s, prefill ` +
    `${report.prefill_tokens_per_s.toFixed(1)} tok/s`;
  await postBench(report);
}

// ---- TTFT bench: /?bench=MODEL&ttft=TURNS: time to first token per turn of an id-level chat that grows by 150 user
// + 150 reply tokens a turn, the KV cache reused across turns (as `python -m driver bench --ttft` natively) ----

async function runTtftBench(model, turns) {
  $('model').value = model;
  state.engine = await createEngine({ model, onProgress });
  const V = state.engine.info.vocab_size;
  let seed = 1;
  const rand = () => { seed = (seed * 1103515245 + 12345) % 2147483648; return seed % V; };
  const ids = (n) => Array.from({ length: n }, rand);
  const opts = { max_tokens: 150, temperature: 0, ignore_eos: true };
  await state.engine.completeIds({ prompt_ids: ids(150), ...opts, max_tokens: 2 }); // warm-up
  const out = [];
  let hist = [];
  for (let t = 0; t < turns; t++) {
    const prompt = [...hist, ...ids(150)]; // turn 1 shares no prefix with the warm-up (other random ids)
    const { ids: got, stats } = await state.engine.completeIds({ prompt_ids: prompt, ...opts });
    out.push({ turn: t + 1, prompt_tokens: stats.prompt_tokens, cached_tokens: stats.cached_tokens,
      prefill_tokens: stats.prefill_tokens, ttft_s: stats.ttft_s });
    hist = [...prompt, ...got];
  }
  const report = { model, bench: 'ttft', turns: out, ratio_last_first: out[out.length - 1].ttft_s / out[0].ttft_s,
    info: state.engine.info };
  state.bench = report;
  $('modelstate').textContent = `bench: turn ${turns} TTFT ${(1e3 * out[out.length - 1].ttft_s).toFixed(1)} ms = ` +
    `${report.ratio_last_first.toFixed(2)}x turn 1`;
  await postBench(report);
}

// ---- kernel check: /?check=1[&op=matmul&op=gate_up][&matrix=0]: the shader check cases (python -m shaders
// export-cases, served by server.py --check-cases) on this page's device, every variant its caps allow; the rows are
// POSTed to /api/check (server.py --check-out) and the page says N/M passed ----

async function postCheck(report) {
  await fetch('./api/check', { method: 'POST', headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ ...report, page_adapter: state.adapter, userAgent: navigator.userAgent }) }).catch(() => {});
}

async function runCheck(ops, noMatrix) {
  let n = 0, bad = 0;
  $('modelstate').textContent = 'kernel check: starting…';
  const report = await runKernelCheck({ ops, noMatrix, onRow: (row) => {
    n++;
    if (!row.ok) bad++;
    $('modelstate').textContent = `kernel check: ${n} rows, ${bad} failed`;
  } });
  state.check = { ...report, ops, matrix: !noMatrix };
  $('modelstate').textContent = `kernel check: ${report.passed}/${report.total} passed` +
    (report.passed < report.total ? `, ${report.total - report.passed} FAILED` : '');
  await postCheck(state.check);
}

init();
