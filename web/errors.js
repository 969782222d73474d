// errors.js: the ONE place where engine errors become plain sentences (page, worker and engine.mjs share it).
//
// An error crosses from the worker as {kind, message, hint, cls}: `kind` is the stable name the driver's error class
// carries (driver.backend_js.error_info; JS errors carry one too: integrity, quota, network, ...), `message` its own
// text, `hint` what to do, `cls` the class name. describe() turns that into what the user sees: `message` becomes one
// plain sentence with what to do, never a class name; the engine's text stays in `detail` and the class name in `cls`
// for the console. Setting checks (checkOptions) live here too, so the page and createEngine say the same sentence.

const strip = (s) => String(s ?? '').trim().replace(/[.\s]+$/, '');
const then = (hint, fallback) => ` ${strip(hint || fallback)}.`;

// kind -> {say(detail, hint), reload?}. Unknown kinds fall back to GENERIC.
export const ERRORS = {
  'context-overflow': {
    say: (d) => {
      // the engine's "prompt (N tokens) ... context of M tokens" or driver.session's "is N tokens; this model holds M"
      const m = /prompt \((\d+) tokens\).*?context of (\d+) tokens/.exec(d) || /is ([\d,]+) tokens; this model holds ([\d,]+)/.exec(d);
      const n = (x) => x.replace(/,/g, '');
      const size = m ? ` (${n(m[1])} tokens; the model was loaded with room for ${n(m[2])})` : '';
      return `This conversation is too long for the model${size}. Start a new chat, or shorten your message.`;
    },
  },
  'bad-option': { say: (d) => `A setting is not valid: ${strip(d)}. Change it under Settings.` },
  model: { say: (d, h) => `This model's files are incomplete or not supported (${strip(d)}).` + then(h, 'Pick another model') },
  config: { say: (d, h) => `This model's configuration is not supported (${strip(d)}).` + then(h, 'Pick another model') },
  capability: {
    say: (d, h) => `This model cannot run on this GPU: ${strip(d).replace(/^this model cannot run on this gpu:\s*/i, '')}.` +
      then(h, 'Pick a smaller model'),
  },
  'no-webgpu': { say: (d, h) => `WebGPU is not available here: ${strip(d)}.` + then(h, 'Use a browser with WebGPU') },
  integrity: {
    say: (d) => `A downloaded file failed its integrity check and was not used (${strip(d)}). Load again; if it ` +
      'keeps failing, the copy on the server is damaged.',
  },
  quota: { say: (d) => `${strip(d)}.` },
  network: {
    say: (d) => `The model could not be downloaded (${strip(d)}). Check that the server is running, then load again.`,
  },
  shader: { say: (d, h) => `A GPU program failed to compile here (${strip(d)}).` + then(h, 'Update the browser') },
  gpu: { say: (d, h) => `The GPU refused a request (${strip(d)}).` + then(h, 'Reload the page'), reload: true },
  oom: {
    reload: true,
    say: () => 'The GPU ran out of memory for this model. Close other GPU-heavy tabs or pick a smaller model, then reload.',
  },
  'device-lost': {
    reload: true,
    say: (d) => `The GPU stopped working for this page${d ? ` (${strip(d)})` : ''}. Reload the page to continue.`,
  },
  tokenizer: {
    say: (d) => `The model's tokenizer could not handle this text (${strip(d)}). Try rephrasing your message.`,
  },
  'chat-template': {
    say: (d) => `The model's chat template refused this conversation (${strip(d)}). Start a new chat.`,
  },
  aborted: { say: (d) => `${strip(d || 'Cancelled')}.` },
  // the kernel check page (/?check=1): the exported cases are missing, stale or lack the asked op
  'check-cases': {
    say: (d, h) => `The kernel check cannot run its cases (${strip(d)}).` +
      then(h, 'Export them with python -m shaders export-cases DIR and serve them with server.py --check-cases DIR'),
  },
  worker: {
    reload: true,
    say: (d, h) => `The engine could not start (${strip(d)}).` + then(h, 'Reload the page'),
  },
};

const GENERIC = {
  say: (d) => `Something went wrong in the engine${d ? ` (${strip(d)})` : ''}. Try again; if it keeps ` +
    'happening, reload the page.',
};

// The plain description of an error {kind, message, hint, cls}: {kind, message, hint, cls, detail, reload}.
export function describe({ kind = 'error', message = '', hint = '', cls = '' } = {}) {
  const e = ERRORS[kind] || GENERIC;
  return { kind: ERRORS[kind] ? kind : 'error', message: e.say(String(message || ''), hint), hint: hint || '',
    cls: cls || '', detail: String(message || ''), reload: !!e.reload };
}

// ---- generation settings: one checker, one sentence per bad value ----

// What the engine accepts (driver.sampler.Sampling); the page narrows these to its inputs' min/max.
export const OPTION_RANGES = {
  temperature: { label: 'Temperature', min: 0, max: 100 },
  top_p: { label: 'Top-p', min: 0, max: 1, minOpen: true },
  top_k: { label: 'Top-k', min: 0, max: 1e9, int: true },
  max_tokens: { label: 'Max tokens', min: 1, max: 1e9, int: true },
  repetition_penalty: { label: 'Repetition penalty', min: 0, max: 10, minOpen: true },
  seed: { label: 'Seed', min: 0, max: 2 ** 32 - 1, int: true },
  draft_k: { label: 'Drafted tokens per step', min: 1, max: 15, int: true }, // driver.session MAX_DRAFT_K
};

// [{name, message}] for every option that is set and out of range ([] when all are fine).
export function checkOptions(options, ranges = OPTION_RANGES) {
  const out = [];
  for (const [name, r] of Object.entries(ranges)) {
    const v = options[name];
    if (v === undefined || v === null) continue;
    const ok = typeof v === 'number' && Number.isFinite(v) && (r.minOpen ? v > r.min : v >= r.min) && v <= r.max &&
      (!r.int || Number.isInteger(v));
    if (ok) continue;
    const what = r.int ? 'a whole number' : 'a number';
    const range = r.max >= 1e9 ? `${r.minOpen ? 'above' : 'of at least'} ${r.min}`
      : `${r.minOpen ? 'above' : 'from'} ${r.min} ${r.minOpen ? 'and at most' : 'to'} ${r.max}`;
    const got = typeof v === 'number' && Number.isFinite(v) ? ` (got ${v})` : '';
    out.push({ name, message: `${r.label} must be ${what} ${range}${got}.` });
  }
  return out;
}
