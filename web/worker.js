// worker.js: the engine's Web Worker (module worker). Hosts Pyodide (loaded from ./vendor/pyodide/, never a CDN)
// and the Python driver (wheel `llama3-webgpu-browser`, loaded by name from the local pyodide-lock.json with its
// sha256 checked). The UI thread talks to it with small typed messages (see engine.mjs):
//
//   in:  probe | load {model, base, pipelines?, decode?, noMatrix?} | generate {id, messages|prompt_ids, options, continue?}
//        | stop {id} | delete {model} | unload | check {base, ops, noMatrix?}
//   out: probe {adapter} | progress {phase, ...} | loaded {info} | prefill {id, done, total} | token {id, token, text}
//        | done {id, stats} | error {id?, kind, message, hint, cls, detail, reload} | deleted {model, n}
//        | lost {kind, message, ...} | checkrow {row} | checked {report}
//   check: the kernel check (driver/kernel_check.py) on this worker's own device, over the cases the server
//   exports at ./check/ (python -m shaders export-cases; server.py --check-cases)
//   generate options and done.stats fields: docs/WEB.md ("Requests and stats")
//
// Errors: a Python exception is described by the driver itself (driver.backend_js.error_info: the error class's
// stable kind, its message, hint and class name), JS errors carry a kind; errors.js turns {kind, message, hint} into
// the plain sentence the page shows (`message`), keeping the engine's own text as `detail` and the class name as
// `cls` for the console. A stop for a request still waiting in the queue cancels it before it starts
// (finish_reason 'abort', no tokens).

import * as gpu from './gpu-replay.js';
import * as cache from './cache.js';
import { describe } from './errors.js';

const ROOT = new URL('./', import.meta.url);
const PYODIDE_URL = new URL('./vendor/pyodide/', ROOT).href;
const WHEEL = 'llama3-webgpu-browser';

let pyodide = null;        // Promise<PyodideAPI>
let session = null;        // Python driver.backend_js.Session
let control = { stop: false, id: null };
const cancelled = new Set(); // ids of queued requests stopped before they started
let busy = Promise.resolve();

const post = (m) => self.postMessage(m);

let backend = null;        // the Python module driver.backend_js, once Pyodide runs

// {kind, message, hint, cls} of an exception: a PythonError is described by Python, never parsed from the traceback
function errorInfo(e) {
  if (e && e.type && backend) {
    try { return JSON.parse(backend.last_error_json()); } catch (_) { /* fall through */ }
  }
  return { kind: (e && e.kind) || 'error', message: String((e && e.message) || e), hint: (e && e.hint) || '',
    cls: (e && e.name) || '' };
}

function report(e, id) {
  post({ type: 'error', id, ...describe(errorInfo(e)) });
}

// ---- capability check (before any download) ----

async function probe(mode) {
  const { adapter, mode: m } = await gpu.pickAdapter({ mode });
  return gpu.describeAdapter(adapter, m);
}

// ---- Pyodide ----

function startPyodide() {
  if (pyodide) return pyodide;
  pyodide = (async () => {
    const t0 = performance.now();
    const { loadPyodide } = await import(`${PYODIDE_URL}pyodide.mjs`);
    const py = await loadPyodide({ indexURL: PYODIDE_URL });
    py.registerJsModule('llgpu', gpu);
    const errors = [];
    // loadPackage reports failures (e.g. an integrity mismatch) through errorCallback, it does not throw
    await py.loadPackage([WHEEL], { messageCallback: () => {}, errorCallback: (m) => errors.push(m) });
    try {
      py.runPython('import driver.backend_js, modelfmt, shaders, jinja2');
    } catch (e) {
      throw Object.assign(new Error(`the driver wheel did not load: ${errors.join('; ') || e.message}`),
        { kind: 'worker', hint: 'Rebuild the app with `python -m pybuild`, then reload.' });
    }
    post({ type: 'progress', phase: 'runtime', done: true, ms: performance.now() - t0 });
    return py;
  })();
  return pyodide;
}

// ---- load ----

const verified = new Map(); // shard index -> ArrayBuffer kept only when the cache refused it (quota)

async function load(model, base, pipelines, decode, noMatrix) {
  control.stop = false;
  gpu.setDeviceOptions({ noMatrix: !!noMatrix }); // bench A/B: prefill without the matrix units
  const modelBase = new URL(`./models/${encodeURIComponent(model)}/`, base || ROOT).href;
  const manifest = await cache.fetchFile(new URL('manifest.json', modelBase).href, 'json');
  // capability check before any byte of the weights is downloaded
  const opened = await gpu.openDevice();
  const problems = gpu.checkRequirements(manifest.requirements || {}, opened.limits, opened.features);
  opened.device.destroy();
  if (problems.length) {
    throw Object.assign(new Error(`This model cannot run on this GPU: ${problems.join('; ')}.`),
      { kind: 'capability', hint: 'Use a smaller model or a GPU with higher limits.' });
  }
  const py = startPyodide(); // in parallel with the download

  // download phase: shard by shard; verified shards already in the cache are not fetched again
  const total = manifest.shards.reduce((a, s) => a + s.nbytes, 0);
  let bytes = 0, netBytes = 0, fromCache = 0, fromNet = 0, warned = false;
  const t0 = performance.now();
  let lastPost = 0;
  const tick = (force) => {
    const now = performance.now();
    if (!force && now - lastPost < 100) return;
    lastPost = now;
    // speed counts network bytes only: a load from the browser's cache is not a download
    post({ type: 'progress', phase: 'download', bytes, total, shards: fromCache + fromNet,
      nshards: manifest.shards.length, fromCache, netBytes, speed: netBytes / Math.max(1e-3, (now - t0) / 1000) });
  };
  verified.clear();
  for (let i = 0; i < manifest.shards.length; i++) {
    const r = await cache.ensureShard(modelBase, manifest.shards[i], (n, cached) => {
      bytes += n;
      if (!cached) netBytes += n;
      tick(false);
    });
    if (r.source === 'cache') fromCache++; else fromNet++;
    if (r.quotaError) {
      verified.set(i, r.buf);
      if (!warned) { post({ type: 'warning', ...describe({ kind: 'quota', message: r.quotaError.message }) }); warned = true; }
    }
    tick(true);
  }
  // tokenizer files into Pyodide's file system (small: they are needed in Python anyway)
  const pyo = await py;
  const dir = `/model/${model}`;
  pyo.FS.mkdirTree(dir);
  for (const f of (manifest.tokenizer && manifest.tokenizer.files) || []) {
    const buf = await cache.fetchFile(new URL(f, modelBase).href, 'bytes');
    pyo.FS.writeFile(`${dir}/${f}`, new Uint8Array(buf));
  }
  // preparation phase: Python builds the plan; JS streams each verified shard into its GPU buffer
  let uploaded = 0;
  gpu.setShardProvider(async (i) => {
    if (verified.has(i)) return verified.get(i);
    const buf = await cache.cachedShard(manifest.shards[i]);
    if (!buf) throw new cache.IntegrityError(`shard ${manifest.shards[i].file} vanished from the cache; reload`);
    return buf;
  }, (i, n) => {
    uploaded += n;
    post({ type: 'progress', phase: 'upload', bytes: uploaded, total });
  });
  if (session) { try { session.close(); } catch (e) { /* old device */ } session = null; }
  // the total is what the previous load of this model on this adapter compiled (the page remembers it), if known
  gpu.setCompileListener((n) => post({ type: 'progress', phase: 'compile', done: n,
    total: pipelines > 0 ? Math.max(pipelines, n) : null }));
  backend = backend || pyo.pyimport('driver.backend_js');
  const tPrep = performance.now();
  session = await backend.open_session(JSON.stringify(manifest), modelBase, dir, (phase, done, total2) => {
    post({ type: 'progress', phase, done, total: total2 });
  }, decode ? JSON.stringify(decode) : '');
  verified.clear();
  const dev = session.gpu.device;
  await gpu.popLoadScope(dev);
  dev.onuncapturederror = (ev) => post({ type: 'warning',
    ...describe({ kind: ev.error instanceof GPUOutOfMemoryError ? 'oom' : 'gpu', message: ev.error.message }) });
  const info = JSON.parse(session.info_json());
  session.lost_promise().then((li) => {
    post({ type: 'lost', ...describe({ kind: 'device-lost', message: [li.reason, li.message].filter(Boolean).join(': ') }) });
  });
  info.download = { bytes: total, fromCache, fromNet, ms: performance.now() - t0 };
  info.prepareMs = performance.now() - tPrep;
  return info;
}

// ---- kernel check (/?check=1): the shader check cases on the page's own device ----

async function fetchChecked(url, as) {
  let r;
  try { r = await fetch(url, { cache: 'no-cache' }); } catch (e) { r = null; }
  if (!r || !r.ok) {
    throw Object.assign(new Error(`${url}: ${r ? `HTTP ${r.status}` : 'unreachable'}`), { kind: 'check-cases',
      hint: 'Serve exported cases: python -m shaders export-cases DIR, then python server.py --check-cases DIR.' });
  }
  return as === 'text' ? r.text() : r.arrayBuffer();
}

async function check(m) {
  gpu.setDeviceOptions({ noMatrix: !!m.noMatrix }); // matrix=0: the FMA tiles where the matrix units would be chosen
  const where = new URL('./check/', m.base || ROOT);
  const [text, bin] = await Promise.all([fetchChecked(new URL('cases.json', where).href, 'text'),
    fetchChecked(new URL('cases.bin', where).href, 'bytes')]);
  const pyo = await startPyodide();
  backend = backend || pyo.pyimport('driver.backend_js');
  const runner = pyo.pyimport('driver.kernel_check');
  const out = await runner.check_page(text, new Uint8Array(bin), m.ops || [],
    (row) => post({ type: 'checkrow', row: JSON.parse(row) }));
  return JSON.parse(out);
}

// ---- generate ----

// Continue a reply cut at max tokens: the conversation with the partial assistant turn last and
// `continue_final_message`. driver.session's ChatSession builds the prompt without closing that turn (as transformers'
// apply_chat_template(continue_final_message=True) does) and reuses its KV cache: the earlier turns and the reply
// so far are already there, only the tokens after the longest common prefix are read again.
function continueRequest(m) {
  const last = m.messages && m.messages[m.messages.length - 1];
  if (!last || last.role !== 'assistant') {
    throw Object.assign(new Error('continue needs the partial assistant reply as the last message'),
      { kind: 'bad-option' });
  }
  return { messages: m.messages, prompt_ids: null, options: m.options || {}, continue_final_message: true };
}

async function generate(m) {
  if (!session) throw Object.assign(new Error('no model is loaded'), { kind: 'model', hint: 'Load a model first.' });
  if (cancelled.delete(m.id)) { // stopped while it waited behind another request
    return { prompt_tokens: 0, completion_tokens: 0, finish_reason: 'abort', ttft_s: 0, prefill_tokens_per_s: 0,
      decode_tokens_per_s: 0 };
  }
  control.stop = false;
  control.id = m.id;
  const onToken = (token, text) => post({ type: 'token', id: m.id, token, text });
  const onPrefill = (done, total) => post({ type: 'prefill', id: m.id, done, total });
  // driver.session (ChatSession): options merged with the manifest's, context fit, KV-cache reuse; control.stop is
  // polled between prefill chunks (each awaited, so a 'stop' message gets in) and between tokens
  const req = m.continue ? continueRequest(m)
    : { messages: m.messages || null, prompt_ids: m.prompt_ids || null, options: m.options || {} };
  try {
    return JSON.parse(await session.generate(JSON.stringify(req), onToken, control, onPrefill));
  } finally {
    control.id = null;
  }
}

self.onmessage = (ev) => {
  const m = ev.data;
  if (m.type === 'stop') { // handled at once, even while generating: checked between prefill chunks and tokens
    if (m.id == null || control.id === m.id) control.stop = true;
    else cancelled.add(m.id);
    return;
  }
  busy = busy.then(async () => {
    try {
      if (m.type === 'probe') post({ type: 'probe', adapter: await probe(m.mode) });
      else if (m.type === 'load') post({ type: 'loaded', info: await load(m.model, m.base, m.pipelines, m.decode, m.noMatrix) });
      else if (m.type === 'generate') post({ type: 'done', id: m.id, stats: await generate(m) });
      else if (m.type === 'check') post({ type: 'checked', report: await check(m) });
      else if (m.type === 'profile') {
        if (!session) throw Object.assign(new Error('no model is loaded'), { kind: 'model', hint: 'Load a model first.' });
        post({ type: 'profiled', id: m.id, report: JSON.parse(await session.profile(m.prompt, m.ctx)) });
      }
      else if (m.type === 'delete') {
        const base = new URL(`./models/${encodeURIComponent(m.model)}/`, m.base || ROOT).href;
        const manifest = await cache.fetchFile(new URL('manifest.json', base).href, 'json');
        post({ type: 'deleted', model: m.model, n: await cache.deleteModel(manifest, base) });
      } else if (m.type === 'cached') {
        const base = new URL(`./models/${encodeURIComponent(m.model)}/`, m.base || ROOT).href;
        const manifest = await cache.fetchFile(new URL('manifest.json', base).href, 'json');
        post({ type: 'cached', model: m.model, n: await cache.hasShards(manifest), of: manifest.shards.length });
      } else if (m.type === 'unload') {
        if (session) session.close();
        session = null;
        post({ type: 'unloaded' });
      }
    } catch (e) {
      report(e, m.id);
    }
  });
};

post({ type: 'ready' });
