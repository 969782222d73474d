// cache.js: shard storage in Cache Storage, keyed by sha256 and verified with crypto.subtle before every use.
//
// - A shard is stored only after its bytes hash to the manifest's sha256, so a partial or interrupted download
//   never looks complete; the next load resumes shard by shard (verified shards are kept, the rest is fetched).
// - A cached entry whose bytes no longer match (corruption, tampering, truncation) is deleted and fetched again.
// - Quota errors do not stop the model from loading (it runs from memory this time); the caller is told why
//   it will be downloaded again next time.
// - Small model files (manifest, tokenizer) are kept in a second cache, network first, for offline reloads.

export const SHARD_CACHE = 'llama3-webgpu-shards-v1';
export const FILE_CACHE = 'llama3-webgpu-files-v1';

export class IntegrityError extends Error {
  constructor(m) { super(m); this.name = 'IntegrityError'; this.kind = 'integrity'; }
}
export class QuotaError extends Error { constructor(m) { super(m); this.name = 'QuotaError'; this.kind = 'quota'; } }
export class NetworkError extends Error { constructor(m) { super(m); this.name = 'NetworkError'; this.kind = 'network'; } }

// Keys are relative to this module (not to the page or worker using it), so the page and the worker agree.
const keyFor = (sha256) => new URL(`./__shards__/${sha256}`, import.meta.url).href;

export async function sha256Hex(buf) {
  const d = new Uint8Array(await crypto.subtle.digest('SHA-256', buf));
  let s = '';
  for (const b of d) s += b.toString(16).padStart(2, '0');
  return s;
}

function isQuota(e) {
  return e && (e.name === 'QuotaExceededError' || e.code === 22 || /quota/i.test(String(e.message)));
}

// The verified bytes of a cached shard, or null (a bad entry is deleted).
export async function cachedShard(shard) {
  const cache = await caches.open(SHARD_CACHE);
  const hit = await cache.match(keyFor(shard.sha256));
  if (!hit) return null;
  let buf;
  try { buf = await hit.arrayBuffer(); } catch (e) { buf = null; }
  if (buf && buf.byteLength === shard.nbytes && (await sha256Hex(buf)) === shard.sha256) return buf;
  await cache.delete(keyFor(shard.sha256));
  return null;
}

// Fetch a shard from the network with progress, verify it, store it. Returns the ArrayBuffer.
async function fetchShard(url, shard, onBytes, signal) {
  const resp = await fetch(url, { signal, cache: 'no-store' });
  if (!resp.ok) throw new NetworkError(`download of ${shard.file} failed: HTTP ${resp.status}`);
  const out = new Uint8Array(shard.nbytes);
  let got = 0;
  const reader = resp.body.getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    if (got + value.byteLength > shard.nbytes) throw new IntegrityError(`${shard.file} is larger than the manifest says`);
    out.set(value, got);
    got += value.byteLength;
    onBytes(value.byteLength);
  }
  if (got !== shard.nbytes) throw new IntegrityError(`${shard.file}: got ${got} bytes, expected ${shard.nbytes} (interrupted?)`);
  const hex = await sha256Hex(out.buffer);
  if (hex !== shard.sha256) throw new IntegrityError(`${shard.file}: sha256 ${hex.slice(0, 12)}… does not match the manifest`);
  return out.buffer;
}

// Make shard present and verified: from the cache when possible, else the network (2 tries).
// Returns {buf, source: 'cache'|'network', quotaError?}. onBytes(n, fromCache) reports progress.
export async function ensureShard(baseUrl, shard, onBytes = () => {}, signal) {
  const cached = await cachedShard(shard);
  if (cached) { onBytes(shard.nbytes, true); return { buf: cached, source: 'cache' }; }
  let buf, lastErr;
  for (let attempt = 0; attempt < 2 && !buf; attempt++) {
    let counted = 0;
    try {
      buf = await fetchShard(new URL(shard.file, baseUrl).href, shard, (n) => { counted += n; onBytes(n, false); }, signal);
    } catch (e) {
      onBytes(-counted, false); // roll the progress back for the retry
      // fetch() rejects with a bare TypeError when the server is unreachable
      lastErr = e instanceof TypeError ? new NetworkError(`download of ${shard.file} failed: ${e.message}`) : e;
      if (signal && signal.aborted) throw e;
    }
  }
  if (!buf) throw lastErr;
  let quotaError = null;
  try {
    const cache = await caches.open(SHARD_CACHE);
    await cache.put(keyFor(shard.sha256), new Response(buf.slice(0), {
      headers: { 'Content-Type': 'application/octet-stream', 'Content-Length': String(shard.nbytes) },
    }));
  } catch (e) {
    if (!isQuota(e)) throw e;
    quotaError = new QuotaError('The browser refused to store the model (storage quota exceeded). It will run now ' +
      'but must be downloaded again next time: free disk space, leave private browsing, or allow persistent storage.');
  }
  return { buf, source: 'network', quotaError };
}

export async function hasShards(manifest) {
  const cache = await caches.open(SHARD_CACHE);
  let n = 0;
  for (const s of manifest.shards) if (await cache.match(keyFor(s.sha256))) n++;
  return n;
}

export async function deleteModel(manifest, baseUrl) {
  const cache = await caches.open(SHARD_CACHE);
  let n = 0;
  for (const s of manifest.shards) if (await cache.delete(keyFor(s.sha256))) n++;
  const files = await caches.open(FILE_CACHE);
  for (const k of await files.keys()) if (k.url.startsWith(baseUrl)) await files.delete(k);
  return n;
}

// Small files (manifest, tokenizer): network first (always fresh), cache as the offline fallback.
export async function fetchFile(url, as = 'text') {
  const files = await caches.open(FILE_CACHE);
  try {
    const resp = await fetch(url, { cache: 'no-cache' });
    if (!resp.ok) throw new Error(`HTTP ${resp.status}`);
    try { await files.put(url, resp.clone()); } catch (e) { /* quota: still usable now */ }
    return as === 'json' ? resp.json() : as === 'bytes' ? resp.arrayBuffer() : resp.text();
  } catch (e) {
    const hit = await files.match(url);
    if (!hit) throw new NetworkError(`cannot fetch ${url} (${e.message}) and it is not in this browser's cache`);
    return as === 'json' ? hit.json() : as === 'bytes' ? hit.arrayBuffer() : hit.text();
  }
}
