"""The HTML report: ``figures`` (matplotlib, Agg canvas), ``readings`` (one plain sentence per analysis),
``html`` (page, tables, the example browser), ``stage`` (``lingtrace report``), and ``browser_check``
(headless Chromium: JS/console errors, network use, screenshot)."""
