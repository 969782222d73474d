// engine.mjs: embed the engine in any page. See docs/WEB.md.
//
//   import { createEngine } from '/engine.mjs';
//   const engine = await createEngine({ model: 'smollm2-135m-instruct', onProgress: console.log });
//   for await (const chunk of await engine.chat.completions.create({ messages, stream: true, max_tokens: 64 }))
//     out.textContent += chunk.choices[0].delta.content || '';
//
// The model runs in a Web Worker (Pyodide + the Python driver on WebGPU); this module only passes messages.

import { pickAdapter, describeAdapter, checkRequirements } from './gpu-replay.js';

const HERE = new URL('./', import.meta.url);

export class EngineError extends Error {
  constructor(kind, message, hint = '') { super(message); this.name = 'EngineError'; this.kind = kind; this.hint = hint; }
}

// The server's model list: [{name, bytes, quant, requirements, ...}].
export async function listModels({ base = HERE } = {}) {
  const r = await fetch(new URL('./api/models', base), { cache: 'no-cache' });
  if (!r.ok) throw new EngineError('error', `model list: HTTP ${r.status}`);
  return (await r.json()).models;
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

let nextId = 1;

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
    this.chat = { completions: { create: (req) => this._create(req) } };
    worker.addEventListener('message', (ev) => {
      const m = ev.data;
      if (m.type === 'lost' && this.onLost) this.onLost(m.message);
      const h = m.id != null && this.listeners.get(m.id);
      if (h) h(m);
    });
  }

  _request(payload, onToken, onPrefill = null) {
    const id = nextId++;
    return {
      id,
      done: new Promise((resolve, reject) => {
        this.listeners.set(id, (m) => {
          if (m.type === 'token') onToken(m);
          else if (m.type === 'prefill') { if (onPrefill) onPrefill({ done: m.done, total: m.total }); }
          else if (m.type === 'done') { this.listeners.delete(id); resolve(m.stats); }
          else if (m.type === 'error') { this.listeners.delete(id); reject(new EngineError(m.kind, m.message, m.hint)); }
        });
        this.worker.postMessage({ ...payload, id });
      }),
    };
  }

  // Stop the running generation (between two tokens).
  interrupt() { this.worker.postMessage({ type: 'stop', id: null }); }

  // Greedy or sampled continuation of raw token ids: {ids, stats}. (Tests and benchmarks.)
  async completeIds({ prompt_ids, onToken = null, onPrefill = null, ...options }) {
    const ids = [];
    const req = this._request({ type: 'generate', prompt_ids, options }, (m) => {
      if (m.token >= 0) ids.push(m.token);
      if (onToken) onToken(m.token);
    }, onPrefill);
    const stats = await req.done;
    this.lastIds = ids;
    this.lastStats = stats;
    return { ids, stats };
  }

  _create({ messages, stream = false, temperature, top_p, top_k, max_tokens, seed, repetition_penalty, speculative,
    draft_k, onPrefill = null } = {}) {
    if (!Array.isArray(messages) || !messages.length) throw new EngineError('bad-option', 'messages must be a non-empty array');
    const options = { temperature, top_p, top_k, max_tokens, seed, repetition_penalty, speculative, draft_k };
    const created = Math.floor(Date.now() / 1000);
    const queue = [];
    let wake = null;
    const ids = [];
    const req = this._request({ type: 'generate', messages, options }, (m) => {
      if (m.token >= 0) ids.push(m.token);
      queue.push(m.text);
      if (wake) { wake(); wake = null; }
    }, onPrefill);
    const cid = `chatcmpl-${req.id}`;
    const chunk = (delta, finish, usage) => ({
      id: cid, object: 'chat.completion.chunk', created, model: this.model,
      choices: [{ index: 0, delta, finish_reason: finish }], ...(usage ? { usage } : {}),
    });
    const usageOf = (s) => ({
      prompt_tokens: s.prompt_tokens, completion_tokens: s.completion_tokens,
      total_tokens: s.prompt_tokens + s.completion_tokens,
      extra: { ttft_s: s.ttft_s, prefill_tokens_per_s: s.prefill_tokens_per_s, decode_tokens_per_s: s.decode_tokens_per_s,
        cached_tokens: s.cached_tokens, prefill_tokens: s.prefill_tokens, truncated_turns: s.truncated_turns,
        ...(s.speculative ? { speculative: s.speculative } : {}) },
    });
    let finished = null, failed = null;
    req.done.then((s) => { finished = s; this.lastStats = s; this.lastIds = ids; },
      (e) => { failed = e; }).finally(() => { if (wake) { wake(); wake = null; } });

    if (!stream) {
      return req.done.then((s) => ({
        id: cid, object: 'chat.completion', created, model: this.model,
        choices: [{ index: 0, message: { role: 'assistant', content: queue.join('') }, finish_reason: s.finish_reason }],
        usage: usageOf(s),
      }));
    }
    const self = this;
    const iter = {
      async *[Symbol.asyncIterator]() {
        let first = true;
        for (;;) {
          while (queue.length) {
            const text = queue.shift();
            yield chunk(first ? { role: 'assistant', content: text } : { content: text }, null);
            first = false;
          }
          if (failed) throw failed;
          if (finished) { yield chunk({}, finished.finish_reason, usageOf(finished)); return; }
          await new Promise((r) => { wake = r; });
        }
      },
      interrupt: () => self.interrupt(),
    };
    return Promise.resolve(iter);
  }

  // Forget the model's cached shards in this browser.
  deleteCache() {
    return new Promise((resolve, reject) => {
      const h = (ev) => {
        if (ev.data.type === 'deleted') { this.worker.removeEventListener('message', h); resolve(ev.data.n); }
        if (ev.data.type === 'error') { this.worker.removeEventListener('message', h); reject(new EngineError(ev.data.kind, ev.data.message, ev.data.hint)); }
      };
      this.worker.addEventListener('message', h);
      this.worker.postMessage({ type: 'delete', model: this.model, base: this.base });
    });
  }

  unload() { this.worker.terminate(); }
}

export function startWorker() {
  return new Worker(new URL('./worker.js', import.meta.url), { type: 'module', name: 'llama3-webgpu' });
}

// Load `model` (a folder name under /models/ of `base`): capability check, download (cached, verified),
// shader compilation and upload. onProgress({phase, ...}) reports progress.
export async function createEngine({ model, base = HERE, onProgress = () => {}, worker = null } = {}) {
  if (!model) throw new EngineError('error', 'createEngine: give {model: "<name>"} (see listModels())');
  const w = worker || startWorker();
  const engine = new Engine(w, model, new URL(base, location.href).href);
  engine.info = await new Promise((resolve, reject) => {
    const h = (ev) => {
      const m = ev.data;
      if (m.type === 'progress' || m.type === 'warning') onProgress(m);
      else if (m.type === 'loaded') { w.removeEventListener('message', h); resolve(m.info); }
      else if (m.type === 'error' && m.id == null) { w.removeEventListener('message', h); reject(new EngineError(m.kind, m.message, m.hint)); }
    };
    w.addEventListener('message', h);
    w.addEventListener('error', (e) => reject(new EngineError('error', `worker failed to start: ${e.message || e}`)), { once: true });
    w.postMessage({ type: 'load', model, base: engine.base });
  });
  return engine;
}
