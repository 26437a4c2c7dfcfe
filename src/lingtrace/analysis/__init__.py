"""The paper's analyses as pure functions: score matrices (numpy, memory-mapped is fine) and example
metadata frames in, tables (``pandas.DataFrame``) out; statistics return ``(statistic, p_value)``.

``topk`` (top-k per test example), ``shares`` (Fig. 2, 3, 12, 13), ``average`` (Tables 3, 6),
``overlap`` (Table 4), ``dynamics`` (Wilcoxon tests between epochs), ``distributions`` (Figs. 9-11),
``examples`` (Tables 1, 2, 5), ``scripts`` (script purity / code-switching), ``embeddings`` (the
word-embedding share), ``compare`` (the methods side by side: do the conclusions depend on the
influence method?); ``tables`` documents every output table; ``layout`` says where each method's
analyses live and which methods a run has; ``stage`` runs them all for ``lingtrace analyze``.
(The synthetic run directory the tests use lives in ``tests/support/synthetic.py``.)
"""
