// settings.js: the sampling settings form: its fields read and checked (errors.js checkOptions), shown, and
// turned into request options. Saving them is app.js's (the chats' persistence).
//
// Speculative decoding: one checkbox (prompt lookup, off by default) and its draft_k, which is checked, and sent,
// only while the box is ticked. The page never asks for 'draft' speculation: that needs a second model loaded.

import { checkOptions } from './errors.js';
import { $, state, showError } from './ui.js';

const NUMBERS = ['temperature', 'top_p', 'top_k', 'max_tokens', 'repetition_penalty', 'draft_k'];
export const SETTINGS = [...NUMBERS, 'speculative']; // the fields whose input event saves the settings

function settingRanges(names) {
  const r = {};
  for (const k of names) {
    const inp = $(k);
    r[k] = { label: document.querySelector(`label[for="${k}"]`).textContent.replace(/\s*\(.*\)$/, ''),
      min: +inp.min, max: +inp.max, int: !!inp.dataset.int, minOpen: !!inp.dataset.minOpen };
  }
  return r;
}

// The settings ({...numbers, speculative: bool}), or {bad} after marking every bad field (aria-invalid + its
// sentence). draft_k is left as it is (not checked, the field disabled) while speculation is off.
export function readSettings() {
  const speculative = $('speculative').checked;
  $('draft_k').disabled = !speculative;
  const names = NUMBERS.filter((k) => speculative || k !== 'draft_k');
  const values = { speculative };
  for (const k of names) { const v = $(k).value.trim(); values[k] = v === '' ? NaN : Number(v); }
  const bad = checkOptions(values, settingRanges(names));
  for (const k of NUMBERS) {
    const b = bad.find((x) => x.name === k);
    $(k).setAttribute('aria-invalid', String(!!b));
    $(`${k}-err`).textContent = b ? b.message : '';
  }
  if (bad.length) return { bad };
  return { values };
}

export function showSettings(s) {
  for (const k of NUMBERS) $(k).value = String(s[k]);
  $('speculative').checked = s.speculative;
  $('system').value = s.system;
  readSettings();
}

// The request options; speculation only when it is on (the engine's default is off).
export function options() {
  const s = state.settings;
  return { temperature: s.temperature, top_p: s.top_p, top_k: s.top_k, max_tokens: s.max_tokens,
    repetition_penalty: s.repetition_penalty, ...(s.speculative ? { speculative: 'lookup', draft_k: s.draft_k } : {}) };
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

