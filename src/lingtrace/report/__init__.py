"""The HTML report: ``inputs`` (everything it reads, through ``lingtrace.run``'s readers), ``sections``
(one module per group of sections), ``figure_sets`` and ``figures`` (which figures, and matplotlib on an
Agg canvas), ``browser`` (the example browser's data), ``readings`` (one plain sentence per analysis),
``methods`` (what the report says about each influence method), ``html`` (page, tables, the example
browser) and ``stage`` (page assembly, ``lingtrace report``). The headless-Chromium check the report
tests use lives in ``tests/support/browser_check.py``."""
