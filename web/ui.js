// ui.js: what every part of the page shares: the state, element lookup, the error / announcement regions,
// progress bars, scrolling, the adapter line and the model chip. Imports no other page module.

import { describe } from './errors.js';
import { softwareAdapter } from './engine.mjs';
import * as store from './store.js';

export const $ = (id) => document.getElementById(id);
export const state = {
  models: [], broken: [], adapter: null, engine: null, loadedModel: null, loading: null, ready: false,
  chats: [], chat: null, settings: { ...store.DEFAULT_SETTINGS }, run: null, generating: false,
  lastFinish: null, lastRequest: null, lastTps: null, progressLog: [], views: new Map(),
};
window.__app = state; // for tests and the bench page

export const fmtBytes = (n) => (n >= 2 ** 30 ? `${(n / 2 ** 30).toFixed(2)} GiB`
  : n >= 2 ** 20 ? `${(n / 2 ** 20).toFixed(1)} MiB` : `${(n / 1024).toFixed(0)} KiB`);

// ---- errors and announcements ----

export function showError(err) {
  const d = err && err.message && err.kind ? err
    : describe({ kind: err && err.kind, message: err && err.message, hint: err && err.hint, cls: err && err.name });
  // the class name and the raw message: console only
  if (d.cls || d.detail) console.warn(`[engine] ${d.cls || 'Error'}: ${d.detail || d.message}`);
  $('errortext').textContent = d.message;
  state.errorKind = d.kind;
  $('error').classList.add('show');
  $('reload').hidden = !d.reload;
}
export function clearError() {
  state.errorKind = null;
  $('errortext').textContent = '';
  $('error').classList.remove('show');
  $('reload').hidden = true;
}
export function announce(text) { $('announce').textContent = text; }

// ---- the selected model ----

export function selected() { return state.models.find((m) => m.name === $('model').value); }
export const label = (m) => m.label || m.display_name || m.name;

export function setProgress(id, frac, text) {
  const v = Math.round(Math.max(0, Math.min(1, frac)) * 100);
  $(id).value = v;
  $(id).setAttribute('aria-valuetext', `${v}%: ${text}`);
}

// ---- the model chip (one line once a model is loaded) ----

function adapterShort() {
  const a = state.engine && state.engine.info.adapter || state.adapter || {};
  const sw = softwareAdapter(state.adapter);
  return sw ? `${sw} (software)` : (a.description || a.architecture || a.vendor || 'GPU');
}

export function updateChip() {
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

export function setSetupOpen(open) {
  const loaded = !!state.engine;
  $('setup').hidden = loaded && !open;
  $('chip').setAttribute('aria-expanded', String(!$('setup').hidden));
}

// ---- scrolling ----

export function nearBottom() {
  const s = $('scroller');
  return s.scrollHeight - s.scrollTop - s.clientHeight < 80;
}
export function scrollToEnd(force = false) {
  const s = $('scroller');
  if (force || state.stick) s.scrollTop = s.scrollHeight;
}

// ---- adapter ----

export function showAdapter(a) {
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

export function autoGrow() {
  const p = $('prompt');
  p.style.height = 'auto';
  p.style.height = `${Math.min(p.scrollHeight, 160)}px`;
}
