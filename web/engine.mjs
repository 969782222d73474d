// engine.mjs: embed the engine in any page. See docs/WEB.md.
//
//   import { createEngine } from '/engine.mjs';
//   const engine = await createEngine({ model: 'smollm2-135m-instruct', onProgress: console.log });
//   for await (const chunk of await engine.chat.completions.create({ messages, stream: true, max_tokens: 64 }))
//     out.textContent += chunk.choices[0].delta.content || '';
//
// The model runs in a Web Worker (Pyodide + the Python driver on WebGPU); this module only passes messages.
// Errors are EngineError: `kind` a stable name, `message` a plain sentence with what to do (errors.js), `hint` the
// engine's own advice, `detail` the engine's own text, `cls` its class name. Abort semantics, the same for every way
// of stopping: a stopped request (signal, stream.abort(), engine.interrupt(), engine.unload()) ends with
// finish_reason 'abort' and yields nothing after that.

import { pickAdapter, describeAdapter, checkRequirements } from './gpu-replay.js';
import { hasShards, deleteModel as deleteShards, fetchFile } from './cache.js';
import { describe, checkOptions } from './errors.js';

const HERE = new URL('./', import.meta.url);

export class EngineError extends Error {
  constructor(kind, message, hint = '', { cls = '', detail = '', reload = false } = {}) {
    super(message);
    this.name = 'EngineError';
    this.kind = kind;
    this.hint = hint;
    this.cls = cls;
    this.detail = detail;
    this.reload = reload;
  }
}

// the worker's error message (already described by errors.js) as an EngineError
const fromWorker = (m) => new EngineError(m.kind, m.message, m.hint, m);
const described = (kind, message, hint = '') => fromWorker(describe({ kind, message, hint }));

// The server's model list: [{name, display_name, bytes, quant, requirements, ...}]. With includeBroken, models whose
// folder is incomplete come too, as {name, broken: 'why'} (they cannot be loaded).
export async function listModels({ base = HERE, includeBroken = false } = {}) {
  let r;
  try {
    r = await fetch(new URL('./api/models', base), { cache: 'no-cache' });
  } catch (e) {
    throw described('network', `the model list could not be fetched: ${e.message}`);
  }
  if (!r.ok) throw described('network', `the model list: HTTP ${r.status}`);
  const data = await r.json();
  return includeBroken ? data.models.concat(data.broken || []) : data.models;
}

// The adapter this page would use: {vendor, architecture, description, mode, fallback, features, limits}.
export async function probe({ mode } = {}) {
  const { adapter, mode: m } = await pickAdapter({ mode });
  return describeAdapter(adapter, m);
}

// Plain reasons why `model` (an entry of listModels or a manifest) cannot run on `adapter` ([] when it can).
export function checkModel(model, adapter) {
  return checkRequirements(model.requirements || {}, adapter.limits, adapter.features);
}

// The adapter's name when it is a software renderer (SwiftShader, llvmpipe, WARP...), else null: the model then runs
// on the CPU through an emulated GPU.
export function softwareAdapter(adapter) {
  if (!adapter) return null;
  const text = [adapter.vendor, adapter.architecture, adapter.description, adapter.mode].join(' ');
  const m = /swiftshader|llvmpipe|lavapipe|softpipe|microsoft basic render|warp/i.exec(text);
  if (m) return m[0].toLowerCase() === 'swiftshader' ? 'SwiftShader' : m[0];
  return adapter.fallback || /fallback/i.test(adapter.mode || '') ? 'a software fallback adapter' : null;
}

const modelBase = (model, base) => new URL(`./models/${encodeURIComponent(model)}/`, new URL(base, location.href)).href;

// How much of `model` this browser holds: {cached, total, bytes} (shards present, shards in the manifest, model
// bytes). Presence only: every shard is re-verified by sha256 when it is loaded.
export async function cacheStatus(model, { base = HERE } = {}) {
  const mb = modelBase(model, base);
  const manifest = await fetchFile(new URL('manifest.json', mb).href, 'json');
  return { cached: await hasShards(manifest), total: manifest.shards.length,
    bytes: manifest.shards.reduce((a, s) => a + s.nbytes, 0) };
}

// Forget `model`'s shards and small files in this browser; returns the number of shards removed.
export async function deleteModelCache(model, { base = HERE } = {}) {
  const mb = modelBase(model, base);
  const manifest = await fetchFile(new URL('manifest.json', mb).href, 'json');
  return deleteShards(manifest, mb);
}

// The pipeline count of the last load of a model, so that the next load can say "compiled N of M".
const PIPES_KEY = (model, base) => `llama3-webgpu:pipelines:${modelBase(model, base)}`;
function remembered(key) {
  try { return +(localStorage.getItem(key) || 0); } catch (e) { return 0; } // storage off: no total
}
function remember(key, n) {
  try { if (n > 0) localStorage.setItem(key, String(n)); } catch (e) { /* storage off or full */ }
}

let nextId = 1;
const ABORT_STATS = { prompt_tokens: 0, completion_tokens: 0, finish_reason: 'abort', ttft_s: 0,
  prefill_tokens_per_s: 0, decode_tokens_per_s: 0 };

class Engine {
  constructor(worker, model, base) {
    this.worker = worker;
    this.model = model;
    this.base = base;
    this.info = null;
    this.lastStats = null;
    this.lastIds = [];
    this.listeners = new Map(); // request id -> handler
    this.onLost = null;
    this.closed = false;
    this.chat = { completions: { create: (req) => this._create(req) } };
    worker.addEventListener('message', (ev) => {
      const m = ev.data;
      if (m.type === 'lost' && this.onLost) this.onLost(m.message, fromWorker(m));
      const h = m.id != null && this.listeners.get(m.id);
      if (h) h(m);
    });
  }

  _request(payload, onToken, signal = null, onPrefill = null) {
    const id = nextId++;
    let n = 0;
    const done = new Promise((resolve, reject) => {
      if (this.closed) { resolve({ ...ABORT_STATS }); return; }
      const finish = () => { this.listeners.delete(id); if (signal) signal.removeEventListener('abort', stop); };
      const stop = () => this.worker.postMessage({ type: 'stop', id });
      this.listeners.set(id, (m) => {
        if (m.type === 'token') { n++; onToken(m); }
        else if (m.type === 'prefill') { if (onPrefill) onPrefill({ done: m.done, total: m.total }); }
        else if (m.type === 'done') { finish(); resolve(m.stats); }
        else if (m.type === 'error') { finish(); reject(fromWorker(m)); }
        else if (m.type === 'unloaded') { finish(); resolve({ ...ABORT_STATS, completion_tokens: n }); }
      });
      this.worker.postMessage({ ...payload, id });
      if (signal) {
        if (signal.aborted) stop();
        else signal.addEventListener('abort', stop, { once: true });
      }
    });
    return { id, done };
  }

  // Stop the running generation (between two tokens, or two prefill chunks of a long prompt): it ends with
  // finish_reason 'abort'.
  interrupt() { if (!this.closed) this.worker.postMessage({ type: 'stop', id: null }); }

  // Where the GPU time goes (the bench mode's &profile=1): each op and weight shape of a `prompt`-token prefill chunk
  // and of a decode step at context `ctx`, replayed alone (driver/profile.py): {prompt, ctx, by, prefill, decode},
  // rows [name, dispatches, ms]. Between requests only (it overwrites the KV cache).
  profile({ prompt = 512, ctx = 128 } = {}) {
    const id = nextId++;
    return new Promise((resolve, reject) => {
      this.listeners.set(id, (m) => {
        if (m.type === 'profiled') { this.listeners.delete(id); resolve(m.report); }
        else if (m.type === 'error') { this.listeners.delete(id); reject(fromWorker(m)); }
      });
      this.worker.postMessage({ type: 'profile', id, prompt, ctx });
    });
  }

  // Greedy or sampled continuation of raw token ids: {ids, stats}. (Tests and benchmarks.)
  async completeIds({ prompt_ids, onToken = null, onPrefill = null, signal = null, ...options }) {
    const ids = [];
    const req = this._request({ type: 'generate', prompt_ids, options }, (m) => {
      if (m.token >= 0) ids.push(m.token);
      if (onToken) onToken(m.token);
    }, signal, onPrefill);
    const stats = await req.done;
    this.lastIds = ids;
    this.lastStats = stats;
    return { ids, stats };
  }

  // OpenAI-style chat completion. continue_final_message: the last message is a partial assistant reply to be
  // continued (e.g. one cut at max_tokens); the result holds only the new text.
  _create({ messages, stream = false, temperature, top_p, top_k, max_tokens, seed, repetition_penalty,
    signal = null, continue_final_message = false, speculative, draft_k, onPrefill = null } = {}) {
    if (!Array.isArray(messages) || !messages.length) {
      throw described('bad-option', 'messages must be a non-empty array of {role, content}');
    }
    const options = { temperature, top_p, top_k, max_tokens, seed, repetition_penalty, speculative, draft_k };
    const bad = checkOptions(options);
    if (bad.length) {
      const text = bad.map((b) => b.message).join(' ');
      throw new EngineError('bad-option', text, '', { cls: 'BadOption', detail: text });
    }
    if (continue_final_message && messages[messages.length - 1].role !== 'assistant') {
      throw described('bad-option', 'continue_final_message needs an assistant message last');
    }
    const created = Math.floor(Date.now() / 1000);
    const queue = [];
    let wake = null;
    const ids = [];
    const ctl = new AbortController();
    if (signal) {
      if (signal.aborted) ctl.abort();
      else signal.addEventListener('abort', () => ctl.abort(), { once: true });
    }
    const req = this._request({ type: 'generate', messages, options, continue: !!continue_final_message }, (m) => {
      if (ctl.signal.aborted) return; // nothing of an aborted request is yielded
      if (m.token >= 0) ids.push(m.token);
      queue.push(m.text);
      if (wake) { wake(); wake = null; }
    }, ctl.signal, onPrefill);
    const cid = `chatcmpl-${req.id}`;
    const chunk = (delta, finish, usage) => ({
      id: cid, object: 'chat.completion.chunk', created, model: this.model,
      choices: [{ index: 0, delta, finish_reason: finish }], ...(usage ? { usage } : {}),
    });
    let finished = null, failed = null;
    req.done.then((s) => {
      if (ctl.signal.aborted) s = { ...s, finish_reason: 'abort' };
      finished = s; this.lastStats = s; this.lastIds = ids;
    }, (e) => { failed = e; }).finally(() => { if (wake) { wake(); wake = null; } });

    if (!stream) {
      return req.done.then(() => ({
        id: cid, object: 'chat.completion', created, model: this.model,
        choices: [{ index: 0, message: { role: 'assistant', content: queue.join('') }, finish_reason: finished.finish_reason }],
        usage: usageOf(finished),
      }));
    }
    const iter = {
      async *[Symbol.asyncIterator]() {
        let first = true;
        for (;;) {
          while (queue.length && !ctl.signal.aborted) {
            const text = queue.shift();
            yield chunk(first ? { role: 'assistant', content: text } : { content: text }, null);
            first = false;
          }
          if (failed) throw failed;
          if (finished) { yield chunk({}, finished.finish_reason, usageOf(finished)); return; }
          if (ctl.signal.aborted) queue.length = 0;
          await new Promise((r) => { wake = r; });
        }
      },
      // stop this request only (queued or running); the stream ends with finish_reason 'abort'
      abort: () => { ctl.abort(); if (wake) { wake(); wake = null; } },
      interrupt: () => iter.abort(),
      id: req.id,
    };
    return Promise.resolve(iter);
  }

  // Forget the model's cached shards in this browser.
  deleteCache() { return deleteModelCache(this.model, { base: this.base }); }

  // Terminate the worker (frees the GPU memory). Requests still running end with finish_reason 'abort'.
  unload() {
    if (this.closed) return;
    this.closed = true;
    this.worker.terminate();
    for (const h of [...this.listeners.values()]) h({ type: 'unloaded' });
  }
}

// usage of the last chunk; cached_tokens / truncated_turns appear when the engine reports them (KV-cache reuse)
function usageOf(s) {
  const u = {
    prompt_tokens: s.prompt_tokens, completion_tokens: s.completion_tokens,
    total_tokens: s.prompt_tokens + s.completion_tokens,
    extra: { ttft_s: s.ttft_s, prefill_tokens_per_s: s.prefill_tokens_per_s, decode_tokens_per_s: s.decode_tokens_per_s },
  };
  if (s.cached_tokens != null) u.prompt_tokens_details = { cached_tokens: s.cached_tokens };
  if (s.truncated_turns != null) u.extra.truncated_turns = s.truncated_turns;
  if (s.prefill_tokens != null) u.extra.prefill_tokens = s.prefill_tokens;
  if (s.speculative) u.extra.speculative = s.speculative;
  return u;
}

// The kernel check (docs/WEB.md "Kernel check"): the shader check cases the server exports at ./check/ run on a
// fresh worker's own device, every variant its caps allow. onRow(row) per result row; resolves to the report
// {rows, passed, total, skipped, adapter, features, caps}. `noMatrix`: the device without the matrix units.
export async function runKernelCheck({ base = HERE, ops = [], noMatrix = false, onRow = () => {} } = {}) {
  const w = startWorker();
  try {
    return await new Promise((resolve, reject) => {
      w.addEventListener('message', (ev) => {
        const m = ev.data;
        if (m.type === 'checkrow') onRow(m.row);
        else if (m.type === 'checked') resolve(m.report);
        else if (m.type === 'error') reject(fromWorker(m));
      });
      w.addEventListener('error', (e) => reject(described('worker', e.message || String(e))), { once: true });
      w.postMessage({ type: 'check', base: new URL(base, location.href).href, ops, noMatrix });
    });
  } finally {
    w.terminate();
  }
}

export function startWorker() {
  return new Worker(new URL('./worker.js', import.meta.url), { type: 'module', name: 'llama3-webgpu' });
}

// Load `model` (a folder name under /models/ of `base`): capability check, download (cached, verified),
// shader compilation and upload. onProgress({phase, ...}) reports progress; `signal` cancels the load (the worker
// is terminated, the promise rejects with kind 'aborted'). `decode` (benchmarks): the decode program's
// DecodeOptions fields (driver/decode_options.py), e.g. {short_ctx: 0, head_norm: false}; default: the driver's.
// `noMatrix` (benchmarks): open the device without chromium-experimental-subgroup-matrix, so prefill runs on the
// FMA tiles even where the GPU's matrix units are reachable.
export async function createEngine({ model, base = HERE, onProgress = () => {}, worker = null, signal = null,
  decode = null, noMatrix = false } = {}) {
  if (!model) throw described('bad-option', 'createEngine needs {model: "<name>"} (see listModels())');
  const w = worker || startWorker();
  const engine = new Engine(w, model, new URL(base, location.href).href);
  const key = PIPES_KEY(model, engine.base);
  engine.info = await new Promise((resolve, reject) => {
    let cancel = null;
    const settle = () => { w.removeEventListener('message', h); if (cancel) signal.removeEventListener('abort', cancel); };
    const h = (ev) => {
      const m = ev.data;
      if (m.type === 'progress' || m.type === 'warning') onProgress(m);
      else if (m.type === 'loaded') { settle(); resolve(m.info); }
      else if (m.type === 'error' && m.id == null) { settle(); engine.unload(); reject(fromWorker(m)); }
    };
    w.addEventListener('message', h);
    w.addEventListener('error', (e) => {
      settle();
      engine.unload();
      reject(described('worker', e.message || String(e)));
    }, { once: true });
    if (signal) {
      cancel = () => { settle(); engine.unload(); reject(described('aborted', 'Loading was cancelled')); };
      if (signal.aborted) { cancel(); return; }
      signal.addEventListener('abort', cancel, { once: true });
    }
    w.postMessage({ type: 'load', model, base: engine.base, pipelines: remembered(key), decode, noMatrix });
  });
  remember(key, engine.info.kernels);
  return engine;
}
