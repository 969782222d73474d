"""pybuild: everything the browser needs that is built, not written.

``python -m pybuild`` (run by ``run.sh``) does four steps (and caches the pinned axe-core tarball that the browser
tests use for their accessibility check; it is not part of the app), each idempotent (a rerun with unchanged inputs
rewrites byte-identical files):

1. ``runtime``: the pinned npm package ``pyodide`` (version, sha256 and npm sha512 integrity pinned in
   ``pybuild.pins``), fetched once with ``npm pack`` into ``.cache/downloads/`` and unpacked into
   ``web/vendor/pyodide/`` (ignored by git).
2. ``wheels``: one pure-Python wheel ``llama3_webgpu_browser`` holding the browser half of ``driver`` and all of
   ``shaders`` (modules with a module-level third-party import, e.g. numpy or wgpu, are left out), plus pinned
   pure-Python jinja2 (PyPI wheel) and markupsafe (built pure from its sdist: PyPI has no py3-none-any wheel;
   markupsafe falls back to its Python implementation without the C speedups).
3. ``lockfile``: ``pyodide lockfile add-wheels`` registers those wheels in ``web/vendor/pyodide/pyodide-lock.json``
   (starting from the pristine lock of the tarball each time), so the worker loads them by name with Pyodide's
   sha256 check.
4. ``assets``: ``web/dist/``: the app with content hashes in its file names (``app.<sha256[:12]>.js``), a stable
   ``index.html``, ``engine.mjs`` (embedding entry point) and ``sw.js``, ``asset-map.json``, and a copy of the runtime
   under ``dist/vendor/pyodide/``. ``server.py`` serves ``web/dist`` when it exists; deploy that folder as is.
"""
