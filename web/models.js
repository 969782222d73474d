// models.js: the model card: the model list, what the selected model is and whether it is cached, loading it
// (progress, cancel), deleting it from this browser (with a confirmation), and the automatic load at start.

import { checkModel, createEngine, cacheStatus, deleteModelCache } from './engine.mjs';
import * as store from './store.js';
import {
  $, state, fmtBytes, showError, clearError, announce, selected, label, setProgress, updateChip, setSetupOpen,
  showAdapter,
} from './ui.js';
import { renderLog, setChatEnabled, abortRun } from './chats.js';

// ---- models ----

export function populateModels() {
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

export async function describeModel() {
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

export function onProgress(p) {
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

export async function loadModel({ auto = false } = {}) {
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

export function askDelete() {
  const m = selected();
  if (!m) return;
  $('confirmtext').textContent = `Delete ${label(m)} (${fmtBytes(m.bytes)}) from this browser?` +
    (state.loadedModel === m.name ? ' It is loaded now: it will be unloaded.' : '') +
    ' Loading it again downloads it again.';
  $('confirmdelete').hidden = false;
  $('confirmno').focus();
}

export async function confirmDelete() {
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

export async function autoLoad() {
  const last = store.lastModel();
  const m = state.models.find((x) => x.name === last);
  if (!m || !state.adapter || checkModel(m, state.adapter).length) return;
  let st;
  try { st = await cacheStatus(m.name); } catch (e) { return; }
  if (st.cached !== st.total || state.engine || state.loading) return;
  $('model').value = m.name;
  await loadModel({ auto: true });
}

