"""HTML pieces of `report.html`: number formatting, tables, embedded figures, the style sheet.

Everything taken from a sweep folder goes through `html.escape` here, except the columns a
caller names as trusted HTML (links it built itself).
"""

from __future__ import annotations

import base64
import html
from typing import Optional

import numpy as np
import pandas as pd

esc = html.escape


def fmt(value) -> str:
    """About four significant digits; '–' for missing values."""
    if isinstance(value, (list, tuple, np.ndarray)):
        return "[" + ", ".join(fmt(v) for v in value) + "]"
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return "–"
    if isinstance(value, (bool, np.bool_, str)):
        return str(value)
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return f"{value:.4g}"
    return str(value)


def missing(text: str) -> str:
    return f'<p class="missing">{esc(text)}</p>'


def img(png: bytes, alt: str) -> str:
    return f'<img alt="{esc(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}">'


def figure(fig, alt: str, caption: str = "") -> str:
    from pipeline.report.figures import to_png

    text = f"<figcaption>{esc(caption)}</figcaption>" if caption else ""
    return f"<figure>{img(to_png(fig), alt)}{text}</figure>"


def html_table(frame: pd.DataFrame, row_classes: Optional[list] = None, raw: tuple = ()) -> str:
    """`frame` as an HTML table; numeric columns right-aligned; columns in `raw` are trusted HTML."""
    numeric = {
        c for c in frame.columns if pd.api.types.is_numeric_dtype(frame[c]) and not pd.api.types.is_bool_dtype(frame[c])
    }
    head = "".join(f"<th{' class=num' if c in numeric else ''}>{esc(str(c))}</th>" for c in frame.columns)
    body = []
    for i, values in enumerate(frame.itertuples(index=False)):
        cls = f' class="{row_classes[i]}"' if row_classes and row_classes[i] else ""
        cells = "".join(
            f"<td{' class=num' if c in numeric else ''}>{v if c in raw else esc(fmt(v))}</td>"
            for c, v in zip(frame.columns, values)
        )
        body.append(f"<tr{cls}>{cells}</tr>")
    table = f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
    return f'<div class="scroll">{table}</div>'


CSS = """
body { font: 15px/1.45 system-ui, sans-serif; color: #222; margin: 0 auto; max-width: 1250px; padding: 0 24px 48px; }
h1 { font-size: 1.5em; margin: .8em 0 .2em; }
h2 { border-bottom: 2px solid #ddd; padding-bottom: .15em; margin-top: 1.6em; }
h3 { font-size: 1.05em; }
nav a { margin-right: 1em; }
.summary { font-size: 1.05em; background: #f3f6fa; padding: .6em .9em; border-left: 4px solid #4a7ab0; }
.missing { color: #8a4b00; background: #fff6e5; padding: .3em .6em; border-left: 4px solid #e0a030; }
.note, figcaption { color: #555; font-size: .92em; }
pre { background: #f6f6f6; padding: .6em; overflow-x: auto; font-size: .85em; }
pre.cmd { white-space: pre-wrap; word-break: break-all; }
.scroll { overflow: auto; max-height: 34em; }
table { border-collapse: collapse; font-size: .85em; margin: .4em 0; }
th, td { padding: .2em .55em; border-bottom: 1px solid #e3e3e3; text-align: left; vertical-align: top; }
th { background: #eef1f4; position: sticky; top: 0; }
.num { text-align: right; white-space: nowrap; font-variant-numeric: tabular-nums; }
tr.warn td { background: #fff4c2; }
tr.empty td { color: #888; }
tr.total td { font-weight: 600; border-top: 2px solid #bbb; }
figure { margin: .6em 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
details { margin: .4em 0; }
summary { cursor: pointer; font-weight: 600; }
ol.notes { font-size: .88em; }
table.answer { font-size: .95em; margin: .6em 0 .3em; }
table.answer td, table.answer th { padding: .25em .7em; }
table.answer tr.warn td, table.answer tr.empty td { font-size: .9em; }
.lead { font-size: 1.02em; max-width: 60em; }
"""
