// app.js: the page (UI thread). Never blocks: the engine runs in a Web Worker (engine.mjs -> worker.js).
// Model output is put on the page with textContent only (never innerHTML): no HTML injection from the model.

import { listModels, probe, checkModel, createEngine, startWorker } from './engine.mjs';

const $ = (id) => document.getElementById(id);
const state = { models: [], adapter: null, engine: null, messages: [], generating: false, loadedModel: null };
window.__app = state; // for tests and the bench page

const fmtBytes = (n) => (n >= 2 ** 30 ? `${(n / 2 ** 30).toFixed(2)} GiB` : n >= 2 ** 20 ? `${(n / 2 ** 20).toFixed(1)} MiB`
  : `${(n / 1024).toFixed(0)} KiB`);

const ERROR_TEXT = {
  'no-webgpu': 'WebGPU is not available here. ',
  integrity: 'A downloaded file failed its integrity check (it was not used). Try loading again; if it persists the server copy is damaged. ',
  quota: 'The browser ran out of storage for the model. ',
  oom: 'The GPU ran out of memory for this model. Close other GPU-heavy tabs or pick a smaller model. ',
  'device-lost': 'The GPU device was lost (driver reset or out of memory). ',
  capability: '',
};

function showError(kind, message) {
  $('error').hidden = false;
  $('errortext').textContent = (ERROR_TEXT[kind] || '') + message;
  $('reload').hidden = !(kind === 'device-lost' || kind === 'oom');
}
function clearError() { $('error').hidden = true; }

function selected() { return state.models.find((m) => m.name === $('model').value); }

function describeModel() {
  const m = selected();
  $('capability').hidden = true;
  if (!m) { $('modelinfo').textContent = 'No packed models on this server (see README: python -m weights_tool pack).'; return; }
  $('modelinfo').textContent = `${m.display_name || m.name}: ${fmtBytes(m.bytes)} in ${m.shards} shard(s), ${m.quant}, ` +
    `${m.layers} layers, hidden ${m.hidden_size}.`;
  if (state.adapter) {
    const problems = checkModel(m, state.adapter);
    if (problems.length) {
      $('capability').hidden = false;
      $('capability').textContent = `This model cannot run on this GPU: ${problems.join('; ')}. Nothing was downloaded.`;
    }
  }
  $('load').disabled = !state.adapter || !$('capability').hidden;
}

function setBar(id, frac) { $(id).style.width = `${Math.max(0, Math.min(1, frac)) * 100}%`; }

function onProgress(p) {
  $('progress').hidden = false;
  if (p.type === 'warning') { showError(p.kind, p.message); return; }
  if (p.phase === 'download') {
    setBar('dlbar', p.total ? p.bytes / p.total : 1);
    $('dltext').textContent = `Download: ${fmtBytes(p.bytes)} / ${fmtBytes(p.total)} · shard ${p.shards}/${p.nshards}` +
      (p.fromCache ? ` (${p.fromCache} from this browser's cache)` : '') + ` · ${fmtBytes(p.speed)}/s`;
  } else if (p.phase === 'runtime') {
    $('preptext').textContent = `Python runtime ready (${(p.ms / 1000).toFixed(1)} s).`;
  } else if (p.phase === 'upload') {
    setBar('prepbar', p.total ? 0.5 * p.bytes / p.total : 0);
    $('preptext').textContent = `Preparing: uploading weights to the GPU ${fmtBytes(p.bytes)} / ${fmtBytes(p.total)}`;
  } else if (p.phase === 'compile') {
    setBar('prepbar', 0.5 + 0.5 * (1 - 1 / (1 + p.done / 8)));
    $('preptext').textContent = `Preparing: compiled ${p.done} shader pipeline(s)…`;
  }
}

async function loadModel() {
  const m = selected();
  if (!m) return;
  clearError();
  $('load').disabled = true;
  $('delete').disabled = true;
  $('progress').hidden = false;
  setBar('dlbar', 0); setBar('prepbar', 0);
  $('dltext').textContent = 'Checking this browser\'s cache…';
  $('preptext').textContent = 'Starting the Python runtime…';
  if (state.engine) { state.engine.unload(); state.engine = null; }
  try {
    if (navigator.storage && navigator.storage.persist) await navigator.storage.persist().catch(() => false);
    const t0 = performance.now();
    state.engine = await createEngine({ model: m.name, onProgress });
    state.engine.onLost = (msg) => { showError('device-lost', msg); setChatEnabled(false); };
    state.loadedModel = m.name;
    setBar('prepbar', 1); setBar('dlbar', 1);
    const i = state.engine.info;
    $('preptext').textContent = `Ready in ${((performance.now() - t0) / 1000).toFixed(1)} s ` +
      `(${i.download.fromCache}/${i.download.fromCache + i.download.fromNet} shards from cache; ` +
      `${i.kernels ?? '?'} kernels compiled).`;
    showAdapter({ ...state.adapter, mode: i.mode || state.adapter.mode });
    setChatEnabled(true);
    newChat();
  } catch (e) {
    showError(e.kind, e.message);
    if (state.engine) state.engine.unload();
    state.engine = null;
  } finally {
    $('load').disabled = false;
    $('delete').disabled = false;
  }
}

async function deleteModel() {
  const m = selected();
  if (!m) return;
  const w = startWorker();
  const n = await new Promise((resolve) => {
    w.onmessage = (ev) => {
      if (ev.data.type === 'deleted') resolve(ev.data.n);
      if (ev.data.type === 'error') { showError(ev.data.kind, ev.data.message); resolve(0); }
    };
    w.postMessage({ type: 'delete', model: m.name });
  });
  w.terminate();
  $('dltext').textContent = `Deleted ${n} cached shard(s) of ${m.name} from this browser.`;
  $('progress').hidden = false;
}

function setChatEnabled(on) {
  $('prompt').disabled = !on;
  $('send').disabled = !on || state.generating;
  $('stop').disabled = !state.generating;
}

function addMessage(role, text) {
  const div = document.createElement('div');
  div.className = `msg ${role}`;
  div.textContent = text; // text, never HTML
  $('log').appendChild(div);
  $('log').scrollTop = $('log').scrollHeight;
  return div;
}

function newChat() {
  if (state.generating && state.engine) state.engine.interrupt();
  state.messages = [];
  $('log').replaceChildren();
  $('stats').textContent = '';
}

const num = (id) => { const v = parseFloat($(id).value); return Number.isFinite(v) ? v : undefined; };

async function send(ev) {
  ev.preventDefault();
  const text = $('prompt').value.trim();
  if (!text || !state.engine || state.generating) return;
  $('prompt').value = '';
  clearError();
  addMessage('user', text);
  state.messages.push({ role: 'user', content: text });
  const system = $('system').value.trim();
  const messages = (system ? [{ role: 'system', content: system }] : []).concat(state.messages);
  const out = addMessage('assistant', '');
  out.classList.add('streaming');
  state.generating = true;
  setChatEnabled(true);
  let reply = '';
  const t0 = performance.now();
  let first = null, n = 0;
  try {
    const stream = await state.engine.chat.completions.create({
      messages, stream: true, temperature: num('temperature'), top_p: num('top_p'), top_k: num('top_k'),
      max_tokens: num('max_tokens'), speculative: $('speculative').checked ? 'lookup' : 'off',
    });
    for await (const chunk of stream) {
      const c = chunk.choices[0];
      if (c.delta && c.delta.content) {
        if (first === null) first = performance.now();
        n++;
        reply += c.delta.content;
        out.textContent = reply;
        $('log').scrollTop = $('log').scrollHeight;
        const dt = (performance.now() - first) / 1000;
        $('stats').textContent = `time to first token ${((first - t0) / 1000).toFixed(2)} s · ` +
          `${n > 1 && dt > 0 ? ((n - 1) / dt).toFixed(1) : '–'} tokens/s`;
      }
      if (c.finish_reason) {
        const x = chunk.usage.extra;
        $('stats').textContent = `time to first token ${x.ttft_s.toFixed(2)} s · decode ${x.decode_tokens_per_s.toFixed(1)} ` +
          `tokens/s · prefill ${x.prefill_tokens_per_s.toFixed(1)} tokens/s · ${chunk.usage.completion_tokens} tokens` +
          ` · ${x.cached_tokens} of ${chunk.usage.prompt_tokens} prompt tokens cached` +
          (x.truncated_turns ? ` · ${x.truncated_turns} oldest turn(s) left out to fit the context` : '') +
          (c.finish_reason === 'abort' ? ' · stopped' : '');
        state.lastFinish = c.finish_reason;
      }
    }
    state.messages.push({ role: 'assistant', content: reply });
  } catch (e) {
    // a refused or failed turn is not kept: the next message is sent without it
    if (state.messages.length && state.messages[state.messages.length - 1].content === text) state.messages.pop();
    out.remove();
    showError(e.kind, e.message);
  } finally {
    out.classList.remove('streaming');
    state.generating = false;
    state.lastReply = reply;
    setChatEnabled(true);
  }
}

function showAdapter(a) {
  if (!a) return;
  // browsers hide adapter details unless asked (privacy): say so rather than "unknown"
  const name = [a.vendor, a.architecture, a.description].filter(Boolean).join(' ') || 'GPU (name hidden by the browser)';
  $('adapter').textContent = `${name} · ${a.mode}${a.fallback ? ' · software' : ''}`;
  $('adapter').title = `WebGPU adapter: ${name}\nmode: ${a.mode}\nmaxStorageBufferBindingSize: ${a.limits.maxStorageBufferBindingSize}` +
    `\nmaxStorageBuffersPerShaderStage: ${a.limits.maxStorageBuffersPerShaderStage}`;
}

async function init() {
  $('load').addEventListener('click', loadModel);
  $('delete').addEventListener('click', deleteModel);
  $('model').addEventListener('change', describeModel);
  $('form').addEventListener('submit', send);
  $('stop').addEventListener('click', () => state.engine && state.engine.interrupt());
  $('newchat').addEventListener('click', newChat);
  $('reload').addEventListener('click', () => location.reload());
  $('prompt').addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && !e.shiftKey) { e.preventDefault(); $('form').requestSubmit(); }
  });
  if ('serviceWorker' in navigator) navigator.serviceWorker.register('./sw.js').catch(() => {});
  try {
    state.adapter = await probe();
    showAdapter(state.adapter);
  } catch (e) {
    $('adapter').textContent = 'no WebGPU';
    showError('no-webgpu', e.message);
  }
  try {
    state.models = await listModels();
  } catch (e) {
    showError('error', `Could not list the models: ${e.message}`);
  }
  for (const m of state.models) {
    const o = document.createElement('option');
    o.value = m.name;
    o.textContent = `${m.display_name || m.name} (${fmtBytes(m.bytes)}, ${m.quant})`;
    $('model').appendChild(o);
  }
  const preferred = state.models.find((m) => m.name.startsWith('smollm2'));
  if (preferred) $('model').value = preferred.name;
  describeModel();
  state.ready = true;
  const q = new URLSearchParams(location.search);
  if (q.get('bench')) runBench(q.get('bench'), +(q.get('prompt') || 128), +(q.get('tokens') || 128)).catch(
    (e) => postBench({ error: `${e.name}: ${e.message}` }));
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
  $('stats').textContent = `bench: decode ${report.decode_tokens_per_s.toFixed(1)} tok/s, prefill ` +
    `${report.prefill_tokens_per_s.toFixed(1)} tok/s`;
  await postBench(report);
}

init();
