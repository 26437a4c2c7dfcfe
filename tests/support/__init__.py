"""Test scaffolding, not part of the package (the wheel does not ship it; ``lingtrace`` never imports it).

``tiny`` (tiny XLM-R / BERT / Llama models built from configs with locally trained tokenizers),
``synthetic`` (a synthetic run directory for the analyze and report tests), ``browser_check``
(headless Chromium over the DevTools protocol: JS and console errors, network use, screenshots).
Imported as ``support.*``: pytest puts ``tests/`` on ``sys.path`` (the rootdir ``conftest.py``);
scripts outside the tests (``benchmarks/``) add it themselves.
"""
