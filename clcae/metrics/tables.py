"""Results tables: one evaluation written as Markdown, CSV, JSON, a per-image CSV and a self-contained HTML report.

The data model is plain (no torch): a :class:`Report` holds the metric definitions (:class:`MetricInfo`, with the
weights file each metric used), one :class:`ResultEntry` per (method, representation, metric) with mean, std and
n, notes (e.g. why a metric was not computed), free-form sections describing the run, per-image rows, editing
results and image grids. The writers only format it:

- :func:`markdown_report` / :func:`write_markdown`: the summary table (one row per method and representation,
  ``mean ± std`` per metric, the best value of each column in bold), the editing table and the notes;
- :func:`write_csv`: the same table, wide (``<metric>`` and ``<metric>_std`` columns), numbers at full precision;
- :func:`write_json`: everything, every number with its metric, representation, method, n and weights file;
- :func:`write_per_image_csv`: one row per (image, method, representation);
- :func:`write_html`: one HTML file with inline CSS; its images are referenced relative to the report (or embedded
  as base64 with ``embed_images=True``), so the report folder can be moved or zipped as a whole.

Non-finite numbers are written as empty CSV cells and JSON ``null``.
"""
from __future__ import annotations

import base64
import csv
import dataclasses
import html
import json
import math
import mimetypes
import os
import re
from pathlib import Path
from typing import Any, Iterable, Mapping

from ..fileio import atomic_write

__all__ = ["MetricInfo", "ResultEntry", "GridRow", "ImageGrid", "Report", "REPRESENTATION_LABELS",
           "representation_label", "summarize", "format_mean_std", "markdown_table", "editing_markdown_table",
           "markdown_report", "write_markdown", "write_csv", "write_json", "write_per_image_csv", "write_html",
           "write_all", "json_safe"]

#: Display names of the output representations (the keys are used in CSV / JSON).
REPRESENTATION_LABELS = {"w": "W", "wplus": "W+", "wplus_f": "W+F"}


def representation_label(key: str) -> str:
    """``'wplus_f'`` -> ``'W+F'``; unknown keys are returned unchanged."""
    return REPRESENTATION_LABELS.get(key, key)


@dataclasses.dataclass
class MetricInfo:
    """What a metric column is.

    Attributes:
        name: the column name (``mse``, ``lpips``, ``id_domain``, ``fd_domain``, ...).
        description: one line: what is compared, at which size and range, with which network.
        higher_is_better: ``True`` / ``False`` (``None``: neither, no best value is marked).
        weights: the weights file the metric's network was loaded from (provenance), ``None`` for closed forms.
        per_image: ``False`` for set-level metrics (Fréchet distances: one value per method and representation,
            no std).
        decimals: digits shown in the Markdown / HTML tables.
        best_at: for a metric whose ideal is a value rather than an extreme (the detail ratio: 1), that value; the
            best entry is the one closest to it (``higher_is_better`` is then ``None``).
    """

    name: str
    description: str
    higher_is_better: bool | None
    weights: str | None = None
    per_image: bool = True
    decimals: int = 4
    best_at: float | None = None

    def arrow(self) -> str:
        """The header mark: ``' ↑'``, ``' ↓'``, ``' →1'`` (closest to 1 is best) or nothing."""
        if self.best_at is not None:
            return f" →{self.best_at:g}"
        return "" if self.higher_is_better is None else (" ↑" if self.higher_is_better else " ↓")

    def to_dict(self) -> dict:
        """Plain-data copy."""
        return dataclasses.asdict(self)


@dataclasses.dataclass
class ResultEntry:
    """One aggregated number: ``mean`` (and ``std`` over images, population std, ``None`` for set-level metrics)
    of ``metric`` for ``method`` / ``representation`` over ``n`` images; ``n_invalid`` images gave a non-finite
    value and are left out; ``weights`` is the metric network's file; ``note`` anything a reader must know."""

    method: str
    representation: str
    metric: str
    mean: float
    std: float | None
    n: int
    n_invalid: int = 0
    weights: str | None = None
    note: str = ""

    def to_dict(self) -> dict:
        """Plain-data copy (non-finite numbers become ``None``)."""
        return json_safe(dataclasses.asdict(self))


@dataclasses.dataclass
class GridRow:
    """One row of an image grid: a label and ``(caption, image)`` cells, where ``image`` is a file path (made
    relative to the report) or a ``data:`` URI; ``None`` leaves the cell empty."""

    label: str
    cells: list[tuple[str, str | os.PathLike | None]]


@dataclasses.dataclass
class ImageGrid:
    """An image grid for the HTML report: ``columns`` are the header captions, ``rows`` the images."""

    title: str
    columns: list[str]
    rows: list[GridRow]
    caption: str = ""


@dataclasses.dataclass
class Report:
    """One evaluation, ready to write.

    Attributes:
        title: heading of the Markdown / HTML report.
        metrics: the metric columns, in display order.
        results: aggregated numbers (see :class:`ResultEntry`).
        rows: ``(method, representation)`` pairs in display order (default: order of first appearance in
            ``results``).
        notes: sentences shown under the table (e.g. "LPIPS not computed: needs ...").
        sections: plain-data description of the run (protocol, data, methods, environment, command); written to
            the JSON as is and shown in the HTML as "what was measured".
        per_image: dicts with ``image``, ``method``, ``representation`` and one value per per-image metric.
        editing: dicts as :func:`clcae.metrics.editing.editing_metrics` returns, plus ``method``.
        grids: image grids for the HTML report.
    """

    title: str
    metrics: list[MetricInfo]
    results: list[ResultEntry]
    rows: list[tuple[str, str]] | None = None
    notes: list[str] = dataclasses.field(default_factory=list)
    sections: dict[str, Any] = dataclasses.field(default_factory=dict)
    per_image: list[dict] = dataclasses.field(default_factory=list)
    editing: list[dict] = dataclasses.field(default_factory=list)
    grids: list[ImageGrid] = dataclasses.field(default_factory=list)

    def row_keys(self) -> list[tuple[str, str]]:
        """The ``(method, representation)`` rows in display order."""
        if self.rows is not None:
            return list(self.rows)
        seen: dict[tuple[str, str], None] = {}
        for r in self.results:
            seen.setdefault((r.method, r.representation), None)
        return list(seen)

    def lookup(self) -> dict[tuple[str, str, str], ResultEntry]:
        """``{(method, representation, metric): entry}``."""
        return {(r.method, r.representation, r.metric): r for r in self.results}

    def shown_metrics(self) -> list[MetricInfo]:
        """The metrics that have at least one result (the table's columns)."""
        have = {r.metric for r in self.results}
        return [m for m in self.metrics if m.name in have]


# ---------------------------------------------------------------------------------------------------- numbers
def summarize(values: Iterable[float]) -> dict:
    """``{'mean', 'std', 'n', 'n_invalid'}`` of the finite values (population std, ``ddof=0``, as numpy's default
    that the official scripts print); ``mean``/``std`` are NaN when no value is finite."""
    vals = [float(v) for v in values]
    good = [v for v in vals if math.isfinite(v)]
    n = len(good)
    if n == 0:
        return {"mean": float("nan"), "std": float("nan"), "n": 0, "n_invalid": len(vals)}
    mean = math.fsum(good) / n
    var = math.fsum((v - mean) ** 2 for v in good) / n
    return {"mean": mean, "std": math.sqrt(var), "n": n, "n_invalid": len(vals) - n}


def json_safe(obj: Any) -> Any:
    """Recursively convert to JSON-able plain data: non-finite floats -> ``None``, tuples -> lists, paths -> str."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if hasattr(obj, "item") and callable(obj.item) and getattr(obj, "ndim", 1) == 0:  # numpy / torch scalars
        return json_safe(obj.item())
    return obj


def format_mean_std(mean: float | None, std: float | None, decimals: int = 4) -> str:
    """``'0.1234 ± 0.0567'``; ``'0.1234'`` without std; ``'n/a'`` for a missing or non-finite mean."""
    if mean is None or not math.isfinite(mean):
        return "n/a"
    text = f"{mean:.{decimals}f}"
    if std is not None and math.isfinite(std):
        text += f" ± {std:.{decimals}f}"
    return text


def _best(report: Report, metric: MetricInfo) -> float | None:
    if metric.higher_is_better is None and metric.best_at is None:
        return None
    vals = [r.mean for r in report.results if r.metric == metric.name and r.mean is not None and math.isfinite(r.mean)]
    if len(vals) < 2:
        return None
    if metric.best_at is not None:
        return min(vals, key=lambda v: abs(v - metric.best_at))
    return max(vals) if metric.higher_is_better else min(vals)


def _is_best(entry: ResultEntry, best: float | None, decimals: int) -> bool:
    return best is not None and round(entry.mean, decimals) == round(best, decimals)


# ---------------------------------------------------------------------------------------------------- Markdown
def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def markdown_table(report: Report) -> str:
    """The results as a Markdown table: ``method | representation | n | <metric> ...`` with ``mean ± std`` cells,
    the best value of each column (by :attr:`MetricInfo.higher_is_better`) in bold, ``↑``/``↓`` in the header."""
    metrics = report.shown_metrics()
    table = report.lookup()
    header = ["method", "repr.", "n"]
    for m in metrics:
        header.append(m.name + m.arrow())
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * 2 + ["---:"] * (len(header) - 2)) + "|"]
    bests = {m.name: _best(report, m) for m in metrics}
    for method, rep in report.row_keys():
        ns = {table[(method, rep, m.name)].n for m in metrics if (method, rep, m.name) in table}
        cells = [_md_cell(method), representation_label(rep), "/".join(str(n) for n in sorted(ns)) or "0"]
        for m in metrics:
            e = table.get((method, rep, m.name))
            if e is None:
                cells.append("")
                continue
            text = format_mean_std(e.mean, e.std, m.decimals)
            if _is_best(e, bests[m.name], m.decimals):
                text = f"**{text}**"
            cells.append(text)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _fmt(v: Any, decimals: int = 4) -> str:
    if isinstance(v, Mapping):
        return format_mean_std(v.get("mean"), v.get("std"), decimals)
    if isinstance(v, float):
        return format_mean_std(v, None, decimals)
    return str(v)


#: Editing table columns: (key in the editing dict, header).
_EDIT_COLUMNS = (("slope", "target change / unit strength ↑"), ("id_kept", "identity kept ↑"),
                 ("other_change", "other attributes |Δ| ↓"))


def editing_markdown_table(report: Report) -> str:
    """The editing results as a Markdown table (one row per method and edit); empty string without any."""
    if not report.editing:
        return ""
    lines = ["| method | attribute | strengths | n | " + " | ".join(h for _, h in _EDIT_COLUMNS) + " |",
             "|---|---|---|---:|" + "|".join(["---:"] * len(_EDIT_COLUMNS)) + "|"]
    for e in report.editing:
        strengths = ", ".join(f"{s:g}" for s in e.get("strengths", []))
        cells = [_md_cell(e.get("method", "")), _md_cell(e.get("target_attribute", "")), strengths,
                 str(e.get("n", ""))]
        cells += [_fmt(e.get(k)) for k, _ in _EDIT_COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _metric_legend_md(report: Report) -> list[str]:
    out = []
    for m in report.shown_metrics():
        w = f" Weights: `{m.weights}`." if m.weights else ""
        kind = "" if m.per_image else " (set-level: one value per row, no std)"
        out.append(f"- `{m.name}`{kind}: {m.description}.{w}")
    return out


def markdown_report(report: Report) -> str:
    """The whole Markdown summary: title, run line, table, metric legend, editing table and notes."""
    parts = [f"# {report.title}", ""]
    summary = report.sections.get("summary")
    if summary:
        parts += [str(summary), ""]
    parts += [markdown_table(report), "",
              "Rows: method and output representation (" +
              ", ".join(f"{v} = {k}" for k, v in REPRESENTATION_LABELS.items()) +
              "). Cells: mean ± std over the images (population std); bold: best in the column.", ""]
    legend = _metric_legend_md(report)
    if legend:
        parts += ["Metrics:", "", *legend, ""]
    edit = editing_markdown_table(report)
    if edit:
        parts += ["## Editing (domain network)", "", edit, ""]
    if report.notes:
        parts += ["Notes:", "", *[f"- {n}" for n in report.notes], ""]
    return "\n".join(parts).rstrip() + "\n"


def write_markdown(report: Report, path: str | os.PathLike) -> Path:
    """Write :func:`markdown_report` to ``path`` (atomically); returns the path."""
    with atomic_write(path, "w", fsync=False, encoding="utf-8") as f:
        f.write(markdown_report(report))
    return Path(path)


# ---------------------------------------------------------------------------------------------------- CSV / JSON
def _csv_number(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return repr(v) if math.isfinite(v) else ""
    return str(v)


def write_csv(report: Report, path: str | os.PathLike) -> Path:
    """The results table, wide: ``method, representation, n, <metric>, <metric>_std, ...`` (full precision;
    ``n`` is the largest n of the row; set-level metrics have an empty std). Returns the path."""
    metrics = report.shown_metrics()
    table = report.lookup()
    with atomic_write(path, "w", fsync=False, encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        header = ["method", "representation", "n"]
        for m in metrics:
            header += [m.name, f"{m.name}_std"]
        w.writerow(header)
        for method, rep in report.row_keys():
            entries = [table.get((method, rep, m.name)) for m in metrics]
            row = [method, rep, max((e.n for e in entries if e is not None), default=0)]
            for e in entries:
                row += ["", ""] if e is None else [_csv_number(e.mean), _csv_number(e.std)]
            w.writerow(row)
    return Path(path)


def write_per_image_csv(report: Report, path: str | os.PathLike) -> Path:
    """``image, method, representation, <per-image metric>...`` at full precision (empty cell: not computed or
    not finite). Returns the path."""
    names = [m.name for m in report.metrics if m.per_image]
    present = {k for row in report.per_image for k in row}
    names = [n for n in names if n in present]
    with atomic_write(path, "w", fsync=False, encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["image", "method", "representation", *names])
        for row in report.per_image:
            w.writerow([row["image"], row["method"], row["representation"],
                        *[_csv_number(row.get(n)) for n in names]])
    return Path(path)


def write_json(report: Report, path: str | os.PathLike) -> Path:
    """Everything as JSON: ``{'format': 'clcae.eval_results', 'version': 1, 'title', 'metrics', 'results',
    'notes', 'editing', <sections>}``; each result names its metric, representation, method, n and weights file."""
    obj = {"format": "clcae.eval_results", "version": 1, "title": report.title,
           "metrics": [m.to_dict() for m in report.metrics],
           "results": [r.to_dict() for r in report.results],
           "notes": list(report.notes), "editing": json_safe(report.editing)}
    for key, value in report.sections.items():
        if key in obj:
            raise ValueError(f"report section {key!r} clashes with a reserved JSON key")
        obj[key] = json_safe(value)
    with atomic_write(path, "w", fsync=False, encoding="utf-8") as f:
        json.dump(json_safe(obj), f, indent=2, ensure_ascii=False, allow_nan=False)
        f.write("\n")
    return Path(path)


# ---------------------------------------------------------------------------------------------------- HTML
_CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto; max-width: 1200px;
       padding: 0 1em; color: #222; line-height: 1.45; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
h2 { font-size: 1.25em; margin-top: 1.8em; border-bottom: 1px solid #ddd; }
.sub { color: #666; margin-top: 0; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; }
th { background: #f3f3f3; text-align: center; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr:nth-child(even) td { background: #fafafa; } td.best { font-weight: bold; background: #e8f4e8 !important; }
.note { background: #fff7e0; border-left: 4px solid #e0a800; padding: 0.4em 0.8em; margin: 0.4em 0; }
dl.kv { display: grid; grid-template-columns: max-content auto; gap: 0.2em 1em; }
dl.kv dt { font-weight: bold; } dl.kv dd { margin: 0; word-break: break-all; }
code { background: #f3f3f3; padding: 0 0.2em; border-radius: 3px; }
table.grid td { text-align: center; vertical-align: top; border: none; padding: 0.2em; }
table.grid th { border: none; background: none; font-weight: normal; font-size: 0.85em; color: #444; }
table.grid img { width: 128px; height: auto; image-rendering: pixelated; display: block; margin: auto; }
table.grid td.label { text-align: right; font-size: 0.8em; color: #555; vertical-align: middle; }
.small { font-size: 0.85em; color: #555; }
"""


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _inline(text: Any) -> str:
    """Escape ``text`` for HTML and render its Markdown backtick spans as ``<code>`` elements."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", _e(text))


def _image_src(image: str | os.PathLike, report_dir: Path, embed: bool) -> str:
    s = os.fspath(image)
    if s.startswith("data:"):
        return s
    p = Path(s)
    if embed:
        mime = mimetypes.guess_type(p.name)[0] or "image/png"
        return f"data:{mime};base64," + base64.b64encode(p.read_bytes()).decode("ascii")
    return Path(os.path.relpath(p.resolve(), report_dir.resolve())).as_posix()


def _html_results_table(report: Report) -> str:
    metrics = report.shown_metrics()
    table = report.lookup()
    bests = {m.name: _best(report, m) for m in metrics}
    head = "".join(f"<th title=\"{_e(m.description)}\">{_e(m.name)}"
                   f"{m.arrow()}</th>"
                   for m in metrics)
    rows = []
    for method, rep in report.row_keys():
        ns = sorted({table[(method, rep, m.name)].n for m in metrics if (method, rep, m.name) in table})
        cells = [f"<td>{_e(method)}</td><td>{_e(representation_label(rep))}</td>"
                 f"<td class=\"num\">{_e('/'.join(map(str, ns)) or '0')}</td>"]
        for m in metrics:
            e = table.get((method, rep, m.name))
            if e is None:
                cells.append("<td></td>")
                continue
            cls = "num best" if _is_best(e, bests[m.name], m.decimals) else "num"
            tip = f"n={e.n}" + (f", {e.n_invalid} non-finite left out" if e.n_invalid else "") + \
                  (f"; {e.note}" if e.note else "")
            cells.append(f"<td class=\"{cls}\" title=\"{_e(tip)}\">{_e(format_mean_std(e.mean, e.std, m.decimals))}"
                         "</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return ("<table class=\"results\"><thead><tr><th>method</th><th>repr.</th><th>n</th>" + head +
            "</tr></thead><tbody>" + "".join(rows) + "</tbody></table>")


def _html_metric_list(report: Report) -> str:
    items = []
    for m in report.shown_metrics():
        w = f" <span class=\"small\">weights: <code>{_e(m.weights)}</code></span>" if m.weights else ""
        kind = "" if m.per_image else " <span class=\"small\">(set-level)</span>"
        items.append(f"<li><code>{_e(m.name)}</code>{kind}: {_e(m.description)}.{w}</li>")
    return "<ul>" + "".join(items) + "</ul>" if items else ""


def _html_value(v: Any) -> str:
    if isinstance(v, Mapping):
        return "<dl class=\"kv\">" + "".join(f"<dt>{_e(k)}</dt><dd>{_html_value(x)}</dd>" for k, x in v.items()) + \
               "</dl>"
    if isinstance(v, (list, tuple)):
        if all(not isinstance(x, (Mapping, list, tuple)) for x in v):
            return _e(", ".join(str(x) for x in v))
        return "<ol>" + "".join(f"<li>{_html_value(x)}</li>" for x in v) + "</ol>"
    if isinstance(v, float):
        return _e(f"{v:.6g}")
    return _e(v)


def _html_editing(report: Report) -> str:
    if not report.editing:
        return ""
    head = "".join(f"<th>{_e(h)}</th>" for _, h in _EDIT_COLUMNS)
    rows = []
    for e in report.editing:
        strengths = ", ".join(f"{s:g}" for s in e.get("strengths", []))
        cells = [_e(e.get("method", "")), _e(e.get("target_attribute", "")), _e(strengths), _e(e.get("n", ""))]
        cells += [_e(_fmt(e.get(k))) for k, _ in _EDIT_COLUMNS]
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return ("<table><thead><tr><th>method</th><th>attribute</th><th>strengths</th><th>n</th>" + head +
            "</tr></thead><tbody>" + "".join(rows) + "</tbody></table>")


def _html_grid(grid: ImageGrid, report_dir: Path, embed: bool) -> str:
    head = "<tr><th></th>" + "".join(f"<th>{_e(c)}</th>" for c in grid.columns) + "</tr>"
    rows = []
    for row in grid.rows:
        cells = [f"<td class=\"label\">{_e(row.label)}</td>"]
        for caption, image in row.cells:
            if image is None:
                cells.append("<td></td>")
            else:
                src = _image_src(image, report_dir, embed)
                cells.append(f"<td><img src=\"{_e(src)}\" alt=\"{_e(caption)}\" title=\"{_e(caption)}\"></td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    cap = f"<p class=\"small\">{_e(grid.caption)}</p>" if grid.caption else ""
    return f"<h2>{_e(grid.title)}</h2>{cap}<table class=\"grid\"><thead>{head}</thead><tbody>{''.join(rows)}" \
           "</tbody></table>"


def write_html(report: Report, path: str | os.PathLike, embed_images: bool = False) -> Path:
    """A self-contained HTML report (inline CSS, no scripts, no external resources): the results table, metric
    definitions with their weights files, notes, editing results, image grids and the run description.

    Grid images given as file paths are referenced relative to the report (``embed_images=False``) or embedded
    as base64 ``data:`` URIs (``embed_images=True``, one file to send around). Returns the path.
    """
    path = Path(path)
    report_dir = path.parent
    parts = ["<!DOCTYPE html>", "<html lang=\"en\"><head><meta charset=\"utf-8\">",
             f"<title>{_e(report.title)}</title><style>{_CSS}</style></head><body>",
             f"<h1>{_e(report.title)}</h1>"]
    summary = report.sections.get("summary")
    if summary:
        parts.append(f"<p class=\"sub\">{_e(summary)}</p>")
    parts.append("<h2>Results</h2>")
    parts.append(_html_results_table(report))
    parts.append("<p class=\"small\">Rows: method and output representation (" +
                 _e(", ".join(f"{v} = {k}" for k, v in REPRESENTATION_LABELS.items())) +
                 "). Cells: mean ± std over the images (population std); highlighted: best in the column. "
                 "Hover a cell for n.</p>")
    for note in report.notes:
        parts.append(f"<div class=\"note\">{_inline(note)}</div>")
    parts.append("<h2>Metrics</h2>" + _html_metric_list(report))
    if report.editing:
        parts.append("<h2>Editing (domain network)</h2>" + _html_editing(report))
    for grid in report.grids:
        parts.append(_html_grid(grid, report_dir, embed_images))
    details = {k: v for k, v in report.sections.items() if k != "summary"}
    if details:
        parts.append("<h2>What was measured</h2>" + _html_value(details))
    parts.append("</body></html>")
    with atomic_write(path, "w", fsync=False, encoding="utf-8") as f:
        f.write("\n".join(parts) + "\n")
    return path


def write_all(report: Report, out_dir: str | os.PathLike, embed_images: bool = False) -> dict[str, Path]:
    """Write ``results.md``, ``results.csv``, ``results.json``, ``per_image.csv`` and ``report.html`` into
    ``out_dir``; returns ``{kind: path}``."""
    out = Path(out_dir)
    return {"markdown": write_markdown(report, out / "results.md"),
            "csv": write_csv(report, out / "results.csv"),
            "json": write_json(report, out / "results.json"),
            "per_image": write_per_image_csv(report, out / "per_image.csv"),
            "html": write_html(report, out / "report.html", embed_images=embed_images)}
