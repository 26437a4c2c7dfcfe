"""The HTML fragment ``RUN/experiments/NAME/section.html`` that the report includes.

Contract: one ``<section id="experiment-NAME" class="experiment">`` element, UTF-8, no ``<html>``,
``<head>``, ``<style>`` or ``<script>``; figures are ``<img src="data:image/png;base64,...">``, so nothing
is fetched; every text from the data is escaped. It uses the report's CSS classes (``tag``, ``reading``,
``note``, ``scroll``, ``more``) and links its tables relative to ``RUN/report/``
(``../experiments/NAME/FILE``).
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from lingtrace.report.html import esc, png_img, table_html


def figure(png: bytes, alt: str, caption: str) -> str:
    return f"<figure>{png_img(png, alt)}<figcaption>{esc(caption)}</figcaption></figure>"


def table(frame: pd.DataFrame, formats: dict | None = None, text_columns: Sequence[str] = ()) -> str:
    return table_html(frame, formats=formats or {}, text_columns=text_columns)


def columns_doc(name: str, file: str, columns: dict[str, str]) -> str:
    rows = "".join(f"<tr><td class='text'><code>{esc(c)}</code></td><td class='text'>{esc(m)}</td></tr>" for c, m in columns.items())
    return (
        f'<details class="more"><summary>Columns of experiments/{esc(name)}/{esc(file)}</summary>'
        f"<p class='note'>File: <code>../experiments/{esc(name)}/{esc(file)}</code></p><table><tbody>{rows}</tbody></table></details>"
    )


def section(name: str, title: str, reproduces: str, readings: Sequence[str], cost: str, notes: Sequence[str], body: str) -> str:
    parts = [
        f'<section id="experiment-{esc(name)}" class="experiment">',
        f'<h2>{esc(title)}<span class="tag">{esc(reproduces)}</span></h2>',
    ]
    parts += [f'<p class="reading">{esc(r)}</p>' for r in readings]
    parts.append(f'<p class="note"><strong>Cost:</strong> {esc(cost)}</p>')
    parts += [f'<p class="note">Note: {esc(n)}</p>' for n in notes]
    parts.append(body)
    parts.append("</section>")
    return "\n".join(parts) + "\n"
