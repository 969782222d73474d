// store.js: what the page keeps between visits, in localStorage (this origin only, never sent anywhere):
// the conversation list, the current chat, the settings, and the last model loaded (for the auto-load).
//
// One JSON document under KEY (chats + settings) and the last model under LAST_MODEL. A failing storage (private
// mode, quota) never breaks the page: reads give the defaults, writes report false once.

export const KEY = 'llama3-webgpu:chats:v1';
export const LAST_MODEL = 'llama3-webgpu:last-model';
const MAX_CHATS = 200; // the oldest beyond this are dropped (localStorage holds ~5 MB)

export const DEFAULT_SETTINGS = Object.freeze({
  system: '', temperature: 0.7, top_p: 0.9, top_k: 40, max_tokens: 256, repetition_penalty: 1.1,
  speculative: false, draft_k: 4, // prompt-lookup speculative decoding: off unless the user turns it on
});

function read(key) {
  try { return localStorage.getItem(key); } catch (e) { return null; }
}

function write(key, value) {
  try {
    if (value === null) localStorage.removeItem(key);
    else localStorage.setItem(key, value);
    return true;
  } catch (e) { return false; }
}

// a reply saved before its first token (the page closed mid-request) has no meta: it is not restored
const isMsg = (m) => m && (m.role === 'user' || m.role === 'assistant') && typeof m.content === 'string' &&
  (m.role === 'user' || m.content || m.meta);

// {chats: [{id, title, updated, messages: [{role, content, meta?}]}], currentId, settings}; defaults on any damage.
export function loadState() {
  let doc = null;
  try { doc = JSON.parse(read(KEY) || 'null'); } catch (e) { doc = null; }
  const chats = Array.isArray(doc && doc.chats) ? doc.chats.filter((c) => c && typeof c.id === 'string' &&
    Array.isArray(c.messages)).map((c) => ({ id: c.id, title: String(c.title || ''), updated: +c.updated || 0,
    messages: c.messages.filter(isMsg) })) : [];
  const settings = { ...DEFAULT_SETTINGS };
  const s = (doc && doc.settings) || {};
  for (const k of Object.keys(DEFAULT_SETTINGS)) if (typeof s[k] === typeof DEFAULT_SETTINGS[k]) settings[k] = s[k];
  const currentId = chats.some((c) => c.id === (doc && doc.currentId)) ? doc.currentId : null;
  return { chats, currentId, settings };
}

// Save chats (empty ones are not kept) and settings; false when the browser refused.
export function saveState({ chats, currentId, settings }) {
  const kept = chats.filter((c) => c.messages.length).sort((a, b) => b.updated - a.updated).slice(0, MAX_CHATS);
  return write(KEY, JSON.stringify({ chats: kept, currentId, settings }));
}

export const lastModel = () => read(LAST_MODEL);
export const setLastModel = (name) => write(LAST_MODEL, name);

export function newId() {
  return `c${Date.now().toString(36)}${Math.random().toString(36).slice(2, 8)}`;
}

// A chat's title: the first user message, shortened.
export function titleOf(chat) {
  const first = chat.messages.find((m) => m.role === 'user');
  const t = first ? first.content.replace(/\s+/g, ' ').trim() : '';
  return t ? (t.length > 60 ? `${t.slice(0, 57)}…` : t) : 'New chat';
}
