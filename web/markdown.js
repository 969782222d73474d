// markdown.js: a small Markdown renderer for model output that builds DOM nodes only.
//
// Model text is hostile input (a model can be prompted into emitting `<img src=x onerror=...>`): nothing here
// parses HTML. Every piece of text reaches the page through createTextNode / textContent, elements come from
// createElement with names from ALLOWED only, and links keep absolute http(s)/mailto URLs only (anything else, e.g.
// `javascript:`, stays plain text). Raw HTML in the model's text is shown as the literal characters it is.
//
// Covered: paragraphs (single newlines are line breaks, as chat models expect), ATX headings (shown as h3-h6 so they
// never outrank the page's own), fenced code blocks (``` or ~~~, language tag, a Copy button), indented lists
// (- * + and 1. 1)), block quotes, tables with a separator row, horizontal rules, inline code, **strong**, *em*,
// ~~del~~, [links](URL), <URL> autolinks and bare http(s) URLs. Images are shown as links (a chat
// page never loads a model-chosen image: that would leak the conversation to any host).
//
// Streaming: StreamRenderer.update(fullText) re-parses the text (cheap) but rebuilds only the blocks that changed
// since the previous call (usually the last one), so long replies do not re-render from the top on every token.
// An unclosed code fence renders as an open code block while the reply streams.

export const ALLOWED = new Set(['p', 'br', 'h3', 'h4', 'h5', 'h6', 'ul', 'ol', 'li', 'blockquote', 'hr', 'pre', 'code',
  'div', 'span', 'button', 'strong', 'em', 'del', 'a', 'table', 'thead', 'tbody', 'tr', 'th', 'td']);
export const SAFE_PROTOCOLS = new Set(['http:', 'https:', 'mailto:']);
const MAX_DEPTH = 6; // nested quotes/lists deeper than this are shown as text

function el(name, cls) {
  if (!ALLOWED.has(name)) throw new Error(`markdown.js: <${name}> is not allowed`);
  const e = document.createElement(name);
  if (cls) e.className = cls;
  return e;
}

// An absolute URL with a safe protocol, or null.
export function safeUrl(raw) {
  let u;
  try { u = new URL(String(raw).trim()); } catch (e) { return null; }
  return SAFE_PROTOCOLS.has(u.protocol) ? u.href : null;
}

// ---- blocks ----

const FENCE = /^ {0,3}(`{3,}|~{3,})[ \t]*([^`\s]*)[^`]*$/;
const HEADING = /^ {0,3}(#{1,6})(?:[ \t]+(.*?))?[ \t]*#*[ \t]*$/;
const HR = /^ {0,3}([-*_])(?:[ \t]*\1){2,}[ \t]*$/;
const QUOTE = /^ {0,3}> ?(.*)$/;
const ITEM = /^( *)([-*+]|\d{1,9}[.)])[ \t]+(.*)$/;
const TABLE_SEP = /^ *\|? *:?-+:? *(\| *:?-+:? *)*\|? *$/;
const blank = (s) => /^\s*$/.test(s);

function startsBlock(line, next) {
  return FENCE.test(line) || HEADING.test(line) || HR.test(line) || QUOTE.test(line) || ITEM.test(line) ||
    (line.includes('|') && next !== undefined && TABLE_SEP.test(next) && next.includes('-'));
}

// Text -> [{type, raw, ...}] (raw: the source lines, used as the block's identity while streaming).
export function parseBlocks(text) {
  const lines = String(text).replace(/\r\n?/g, '\n').split('\n');
  const out = [];
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    const start = i;
    let m;
    if (blank(line)) { i++; continue; }
    if ((m = FENCE.exec(line))) {
      const mark = m[1];
      const close = new RegExp(`^ {0,3}${mark[0] === '`' ? '`' : '~'}{${mark.length},}[ \\t]*$`);
      const body = [];
      i++;
      while (i < lines.length && !close.test(lines[i])) body.push(lines[i++]);
      const open = i >= lines.length;
      if (!open) i++;
      out.push({ type: 'code', lang: m[2].replace(/[^\w+#.-]/g, ''), code: body.join('\n'), open,
        raw: lines.slice(start, i) });
    } else if ((m = HEADING.exec(line))) {
      out.push({ type: 'heading', level: m[1].length, text: m[2] || '', raw: [line] });
      i++;
    } else if (HR.test(line)) {
      out.push({ type: 'hr', raw: [line] });
      i++;
    } else if (QUOTE.test(line)) {
      const body = [];
      while (i < lines.length && (m = QUOTE.exec(lines[i]))) { body.push(m[1]); i++; }
      out.push({ type: 'quote', body: body.join('\n'), raw: lines.slice(start, i) });
    } else if ((m = ITEM.exec(line))) {
      const indent = m[1].length;
      const ordered = /\d/.test(m[2]);
      const items = [];
      while (i < lines.length) {
        const im = ITEM.exec(lines[i]);
        if (!im || im[1].length !== indent || /\d/.test(im[2]) !== ordered) break;
        const body = [im[3]];
        const contIndent = indent + im[2].length + 1;
        i++;
        // continuation: indented lines (a nested list, more text) and blank lines followed by indented ones
        while (i < lines.length) {
          const l = lines[i];
          const ind = l.length - l.trimStart().length;
          if (!blank(l) && ind > indent) { body.push(l.slice(Math.min(ind, contIndent))); i++; continue; }
          if (blank(l) && i + 1 < lines.length && !blank(lines[i + 1]) &&
              (lines[i + 1].length - lines[i + 1].trimStart().length) > indent) { body.push(''); i++; continue; }
          break;
        }
        items.push({ number: ordered ? parseInt(im[2], 10) : null, body: body.join('\n') });
        while (i < lines.length && blank(lines[i]) && i + 1 < lines.length && ITEM.test(lines[i + 1]) &&
               ITEM.exec(lines[i + 1])[1].length === indent) i++; // loose list: blank lines between items
      }
      out.push({ type: 'list', ordered, start: items[0].number, items, raw: lines.slice(start, i) });
    } else if (line.includes('|') && i + 1 < lines.length && TABLE_SEP.test(lines[i + 1]) && lines[i + 1].includes('-')) {
      const cells = (l) => l.trim().replace(/^\|/, '').replace(/\|$/, '').split('|').map((c) => c.trim());
      const head = cells(line);
      const align = cells(lines[i + 1]).map((c) => (c.startsWith(':') && c.endsWith(':') ? 'center'
        : c.endsWith(':') ? 'right' : c.startsWith(':') ? 'left' : ''));
      i += 2;
      const rows = [];
      while (i < lines.length && !blank(lines[i]) && lines[i].includes('|')) rows.push(cells(lines[i++]));
      out.push({ type: 'table', head, align, rows, raw: lines.slice(start, i) });
    } else {
      const body = [line];
      i++;
      while (i < lines.length && !blank(lines[i]) && !startsBlock(lines[i], lines[i + 1])) body.push(lines[i++]);
      out.push({ type: 'para', text: body.join('\n'), raw: body });
    }
  }
  return out;
}

// ---- inline ----

const ESCAPABLE = /[\\`*_{}[\]()#+\-.!|~<>"']/;
// delimiter -> [[element, pattern], ...] tried in order: **strong** before *em*; the content may not start or end
// with a space, as in CommonMark
const EMPHASIS = {
  '*': [['strong', /^\*\*(?=\S)([\s\S]*?\S)\*\*/], ['em', /^\*(?=[^\s*])([\s\S]*?[^\s\\])\*(?!\*)/]],
  _: [['strong', /^__(?=\S)([\s\S]*?\S)__/], ['em', /^_(?=[^\s_])([\s\S]*?[^\s\\])_(?!_)/]],
  '~': [['del', /^~~(?=\S)([\s\S]*?\S)~~/]],
};

// Inline Markdown of `text` appended to `parent` as DOM nodes (newlines become <br>).
export function renderInline(parent, text, depth = 0) {
  let buf = '';
  const flush = () => {
    if (!buf) return;
    const parts = buf.split('\n');
    parts.forEach((p, k) => {
      if (k) parent.appendChild(el('br'));
      if (p) parent.appendChild(document.createTextNode(p));
    });
    buf = '';
  };
  // a link whose text is its own URL; false (nothing appended) for an unsafe target
  const autolink = (url) => {
    const href = safeUrl(url);
    if (!href) return false;
    flush();
    const a = el('a');
    a.href = href;
    a.target = '_blank';
    a.rel = 'noopener noreferrer nofollow';
    a.textContent = url;
    parent.appendChild(a);
    return true;
  };
  const s = String(text);
  let i = 0;
  while (i < s.length) {
    const c = s[i];
    const rest = s.slice(i);
    let m;
    if (c === '\\' && i + 1 < s.length && ESCAPABLE.test(s[i + 1])) { buf += s[i + 1]; i += 2; continue; }
    if (c === '`' && (m = /^(`+)([\s\S]*?[^`])\1(?!`)/.exec(rest))) {
      flush();
      const code = el('code');
      code.textContent = m[2].replace(/\n/g, ' ').replace(/^ (.*) $/, '$1');
      parent.appendChild(code);
      i += m[0].length;
      continue;
    }
    if ((c === '[' || (c === '!' && s[i + 1] === '[')) &&
        (m = /^!?\[([^\]\n]*)\]\(\s*<?([^\s()<>]*(?:\([^\s()<>]*\)[^\s()<>]*)*)>?(?:\s+"[^"\n]*")?\s*\)/.exec(rest))) {
      const href = safeUrl(m[2]);
      if (href && depth < MAX_DEPTH) {
        flush();
        const a = el('a');
        a.href = href;
        a.target = '_blank';
        a.rel = 'noopener noreferrer nofollow';
        renderInline(a, m[1] || href, depth + 1);
        parent.appendChild(a);
      } else {
        buf += m[1] || m[2]; // unsafe or relative target: the words stay, the link goes
      }
      i += m[0].length;
      continue;
    }
    // autolinks: <scheme:...> and bare http(s) URLs, shown as their own text
    if (c === '<' && (m = /^<([a-z][a-z0-9+.-]*:[^\s<>]+)>/i.exec(rest)) && autolink(m[1])) {
      i += m[0].length;
      continue;
    }
    if ((c === 'h' || c === 'H') && /[^\w]$|^$/.test(s.slice(Math.max(0, i - 1), i)) &&
        (m = /^https?:\/\/[^\s<>"'`]+[^\s<>"'`.,;:!?)\]]/i.exec(rest)) && autolink(m[0])) {
      i += m[0].length;
      continue;
    }
    if (depth < MAX_DEPTH && EMPHASIS[c] && !(c === '_' && /\w/.test(i ? s[i - 1] : ' '))) { // snake_case: no
      const hit = EMPHASIS[c].map(([tag, re]) => [tag, re.exec(rest)]).find(([, x]) => x);
      // a closing _ inside a word is not one either
      if (hit && !(c === '_' && hit[0] === 'em' && /\w/.test(s[i + hit[1][0].length] || ''))) {
        flush();
        const e = el(hit[0]);
        renderInline(e, hit[1][1], depth + 1);
        parent.appendChild(e);
        i += hit[1][0].length;
        continue;
      }
    }
    buf += c;
    i++;
  }
  flush();
  return parent;
}

// ---- block rendering ----

function codeBlock(b) {
  const wrap = el('div', 'code');
  const bar = el('div', 'codebar');
  const lang = el('span', 'lang');
  lang.textContent = b.lang || 'code';
  const copy = el('button', 'copy');
  copy.type = 'button';
  copy.textContent = 'Copy';
  copy.setAttribute('aria-label', `Copy ${b.lang ? `${b.lang} ` : ''}code`);
  const pre = el('pre');
  pre.tabIndex = 0; // a wide line scrolls inside the block: keyboard users must reach that scroll too
  const code = el('code');
  if (b.lang) code.className = `language-${b.lang}`;
  code.textContent = b.code;
  copy.addEventListener('click', async () => {
    try {
      await navigator.clipboard.writeText(code.textContent);
      copy.textContent = 'Copied';
    } catch (e) { // no clipboard permission: select the code so that Ctrl+C copies it
      const r = document.createRange();
      r.selectNodeContents(code);
      const sel = getSelection();
      sel.removeAllRanges();
      sel.addRange(r);
      copy.textContent = 'Selected: press Ctrl+C';
    }
    setTimeout(() => { copy.textContent = 'Copy'; }, 2000);
  });
  bar.append(lang, copy);
  pre.appendChild(code);
  wrap.append(bar, pre);
  return wrap;
}

export function renderBlock(b, depth = 0) {
  switch (b.type) {
    case 'code': return codeBlock(b);
    case 'heading': return renderInline(el(`h${Math.min(6, b.level + 2)}`), b.text, depth);
    case 'hr': return el('hr');
    case 'quote': {
      const q = el('blockquote');
      if (depth >= MAX_DEPTH) q.textContent = b.body;
      else for (const x of parseBlocks(b.body)) q.appendChild(renderBlock(x, depth + 1));
      return q;
    }
    case 'list': {
      const list = el(b.ordered ? 'ol' : 'ul');
      if (b.ordered && b.start !== 1 && b.start !== null) list.start = b.start;
      for (const it of b.items) {
        const li = el('li');
        const inner = depth >= MAX_DEPTH ? [] : parseBlocks(it.body);
        if (depth >= MAX_DEPTH) li.textContent = it.body;
        else if (inner.length === 1 && inner[0].type === 'para') renderInline(li, inner[0].text, depth); // tight item
        else for (const x of inner) li.appendChild(renderBlock(x, depth + 1));
        list.appendChild(li);
      }
      return list;
    }
    case 'table': {
      const wrap = el('div', 'tablewrap');
      const t = el('table');
      const thead = el('thead');
      const tbody = el('tbody');
      const row = (cells, tag) => {
        const tr = el('tr');
        b.head.forEach((_, k) => {
          const cell = el(tag, b.align[k] ? `al-${b.align[k]}` : '');
          renderInline(cell, cells[k] || '', depth);
          tr.appendChild(cell);
        });
        return tr;
      };
      thead.appendChild(row(b.head, 'th'));
      for (const r of b.rows) tbody.appendChild(row(r, 'td'));
      t.append(thead, tbody);
      wrap.appendChild(t);
      return wrap;
    }
    default: return renderInline(el('p'), b.text, depth);
  }
}

// The whole text as a DocumentFragment.
export function renderMarkdown(text) {
  const frag = document.createDocumentFragment();
  for (const b of parseBlocks(text)) frag.appendChild(renderBlock(b));
  return frag;
}

// Incremental rendering into `container` while a reply streams: update(fullText) keeps the DOM of unchanged
// blocks (identity: type + source lines + open/closed) and rebuilds from the first changed block on.
export class StreamRenderer {
  constructor(container) {
    this.container = container;
    this.keys = [];
    this.nodes = [];
  }

  update(text) {
    const blocks = parseBlocks(text);
    const keys = blocks.map((b) => `${b.type}${b.open ? '+' : ''}\u0000${b.raw.join('\n')}`);
    let k = 0;
    while (k < keys.length && k < this.keys.length && keys[k] === this.keys[k]) k++;
    for (const n of this.nodes.splice(k)) n.remove();
    for (let j = k; j < blocks.length; j++) {
      const n = renderBlock(blocks[j]);
      this.container.appendChild(n);
      this.nodes.push(n);
    }
    this.keys = keys;
    return k; // index of the first rebuilt block (tests: streaming rebuilds only the tail)
  }
}
