"""The report's sections, one module per group of related sections; each maker returns a section's HTML
(``html.section``) or, for an analysis shown per method, one method's ``Block`` of it.

``common`` (``Block``, the one-section-from-every-method's-block ``per_method_section`` and the helpers
the makers share), ``summary`` (run summary with the influence methods, and the configuration),
``shares`` (language shares, average influence, reinforcing vs complementary), ``dynamics`` (dynamics
over fine-tuning), ``scores`` (score distributions, scripts, word embeddings), ``comparison`` ("Do the
conclusions depend on the method?"), ``examples`` (example tables and the example browser) and
``experiments`` (the sections the retraining experiments wrote). ``stage.build_report`` puts them in order.
"""
