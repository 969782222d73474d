// sw.js: service worker for offline reloads of the app shell (page, scripts, Pyodide runtime, driver wheels).
// Network first (a new build is picked up at once, no stale app), the cache as the fallback when offline.
// pybuild writes the exact file list of a build between the markers; the list below is the development default.
// Model shards are NOT handled here: the worker keeps them in their own verified cache (cache.js).

const BUILD = /*@SHELL@*/{"version": "dev", "files": ["./", "./index.html", "./style.css", "./app.js", "./engine.mjs",
  "./worker.js", "./cache.js", "./gpu-replay.js", "./errors.js", "./markdown.js", "./chatview.js", "./store.js",
  "./ui.js", "./settings.js", "./chats.js", "./models.js"]}/*@END@*/;
const SHELL_CACHE = `llama3-webgpu-shell-${BUILD.version}`;

self.addEventListener('install', (ev) => {
  ev.waitUntil((async () => {
    const c = await caches.open(SHELL_CACHE);
    await Promise.all(BUILD.files.map((f) => c.add(new Request(f, { cache: 'no-cache' })).catch(() => {})));
    await self.skipWaiting();
  })());
});

self.addEventListener('activate', (ev) => {
  ev.waitUntil((async () => {
    for (const k of await caches.keys()) if (k.startsWith('llama3-webgpu-shell-') && k !== SHELL_CACHE) await caches.delete(k);
    await self.clients.claim();
  })());
});

self.addEventListener('fetch', (ev) => {
  const url = new URL(ev.request.url);
  if (ev.request.method !== 'GET' || url.origin !== self.location.origin) return;
  const scope = new URL(self.registration.scope).pathname;
  // shards and model files live in the worker's own caches; the model list is cached here for offline reloads
  if (url.pathname.startsWith(`${scope}models/`)) return;
  ev.respondWith((async () => {
    const c = await caches.open(SHELL_CACHE);
    try {
      const resp = await fetch(ev.request);
      if (resp.ok && resp.status === 200) c.put(ev.request, resp.clone()).catch(() => {});
      return resp;
    } catch (e) {
      const hit = await c.match(ev.request, { ignoreSearch: true });
      if (hit) return hit;
      throw e;
    }
  })());
});
