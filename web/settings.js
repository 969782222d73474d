// settings.js: the sampling settings form: its fields read and checked (errors.js checkOptions), shown, and
// turned into request options. Saving them is app.js's (the chats' persistence).

import { checkOptions } from './errors.js';
import { $, state, showError } from './ui.js';

export const SETTINGS = ['temperature', 'top_p', 'top_k', 'max_tokens', 'repetition_penalty'];

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
export function readSettings() {
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

export function showSettings(s) {
  for (const k of SETTINGS) $(k).value = String(s[k]);
  $('system').value = s.system;
  readSettings();
}

export function options() {
  const s = state.settings;
  return { temperature: s.temperature, top_p: s.top_p, top_k: s.top_k, max_tokens: s.max_tokens,
    repetition_penalty: s.repetition_penalty };
}

export function validSettings() {
  const r = readSettings();
  if (!r.bad) { Object.assign(state.settings, r.values); return true; }
  $('settings').open = true;
  showError({ kind: 'settings',
    message: `${r.bad.map((b) => b.message).join(' ')} Fix it under Settings, then send again.` });
  $(r.bad[0].name).focus();
  return false;
}

