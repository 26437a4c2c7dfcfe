"""The HTML report: ``figures`` (matplotlib, Agg canvas), ``readings`` (one plain sentence per analysis),
``html`` (page, tables, the example browser) and ``stage`` (``lingtrace report``). The headless-Chromium
check the report tests use lives in ``tests/support/browser_check.py``."""
