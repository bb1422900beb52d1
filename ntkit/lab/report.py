"""HTML reports: one self-contained page per run, and an index over all runs.

`render_run` turns a ``result.json`` document into a page whose figures are embedded as
base64 PNGs (it works offline and survives being copied alone). `write_index` scans
``<out>/<experiment>/<run>/`` for finished runs (hidden ``.…partial`` folders of
interrupted runs are skipped) and writes ``<out>/index.html`` with relative links.

(``ntkit.lab.report`` the *function* is defined in ``ntkit/lab/__init__.py``; import
this module's contents with ``from ntkit.lab.report import render_run, write_index``.)
"""

from __future__ import annotations

import base64
import html
import json
import os
from pathlib import Path
from typing import Any

from ntkit.lab.records import REPORT_FILE, RESULT_FILE, fmt_value, is_complete_run

__all__ = ["MAX_TABLE_ROWS", "find_runs", "render_run", "write_index"]

MAX_TABLE_ROWS = 300

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;
 max-width:1100px;padding:0 1em;color:#222;line-height:1.45}
h1{font-size:1.5em;margin-bottom:.2em} h2{font-size:1.2em;margin-top:1.6em;
 border-bottom:1px solid #ddd} .sub{color:#666;margin-top:0}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em}
th,td{border:1px solid #ddd;padding:.25em .55em;text-align:left;vertical-align:top}
th{background:#f4f4f4} td.num{text-align:right;font-variant-numeric:tabular-nums}
.ok{color:#11823b;font-weight:bold} .bad{color:#c62828;font-weight:bold}
.fig{margin:1em 0} .fig img{max-width:100%;border:1px solid #eee}
figcaption{font-size:.92em;color:#333;max-width:1000px}
.summary{background:#f7f9fc;border-left:4px solid #5b8def;padding:.6em 1em;
 white-space:pre-wrap} details{margin:.5em 0} pre{background:#f6f6f6;padding:.6em;
 overflow:auto;font-size:.85em}
"""


def _e(x: Any) -> str:
    return html.escape("" if x is None else str(x))


def _cell(v: Any) -> str:
    if isinstance(v, bool) or v is None or isinstance(v, str):
        return f"<td>{_e(v)}</td>"
    if isinstance(v, (int, float)):
        return f'<td class="num">{_e(fmt_value(v))}</td>'
    return f"<td>{_e(json.dumps(v)[:200])}</td>"


def _mark(holds: Any) -> str:
    return '<span class="ok">✓</span>' if holds else '<span class="bad">✗</span>'


def _claims_html(claims: list[dict]) -> str:
    if not claims:
        return "<p>(no claims)</p>"
    rows = ["<tr><th></th><th>claim</th><th>predicted</th><th>measured</th>"
            "<th>tolerance</th><th>note</th></tr>"]
    for c in claims:
        rows.append(f"<tr><td>{_mark(c.get('holds'))}</td><td>{_e(c.get('name'))}</td>"
                    f"{_cell(c.get('predicted'))}{_cell(c.get('measured'))}"
                    f"{_cell(c.get('tolerance'))}<td>{_e(c.get('note'))}</td></tr>")
    return "<table>" + "".join(rows) + "</table>"


def _table_html(name: str, cols: dict[str, list]) -> str:
    keys = list(cols)
    n = max((len(v) for v in cols.values()), default=0)
    shown = min(n, MAX_TABLE_ROWS)
    rows = ["<tr>" + "".join(f"<th>{_e(k)}</th>" for k in keys) + "</tr>"]
    for i in range(shown):
        rows.append("<tr>" + "".join(_cell(cols[k][i] if i < len(cols[k]) else None)
                                     for k in keys) + "</tr>")
    more = f"<p>({n - shown} more rows in result.json)</p>" if n > shown else ""
    return (f"<details open><summary><b>{_e(name)}</b> ({n} rows)</summary>"
            f"<table>{''.join(rows)}</table>{more}</details>")


def _figure_html(run_dir: Path, name: str, caption: str = "") -> str:
    path = run_dir / name
    try:
        data = base64.b64encode(path.read_bytes()).decode("ascii")
    except OSError:
        return f'<div class="fig"><p>(figure {_e(name)} missing)</p></div>'
    text = f"<b>{_e(name)}</b>" + (f". {_e(caption)}" if caption else "")
    return (f'<figure class="fig"><img alt="{_e(name)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{text}</figcaption></figure>")


def render_run(doc: dict, run_dir: str | Path) -> str:
    """The self-contained HTML page of one run (``doc`` as written to result.json)."""
    run_dir = Path(run_dir)
    claims = doc.get("claims", [])
    held = sum(bool(c.get("holds")) for c in claims)
    cfg = doc.get("config", {})
    env = doc.get("environment", {})
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>ntkit lab: {_e(doc.get('name'))}</title><style>{_CSS}</style></head><body>",
        f"<h1>{_e(doc.get('name'))}</h1>",
        f"<p class='sub'>{_e(doc.get('description'))}</p>",
        f"<p>started {_e(doc.get('started'))} · wall time "
        f"{_e(fmt_value(doc.get('wall_time_s')))} s · quick={_e(cfg.get('quick'))} · "
        f"seed={_e(cfg.get('seed'))} · <b>{held}/{len(claims)} claims hold</b></p>",
    ]
    if doc.get("summary"):
        parts.append(f"<div class='summary'>{_e(doc['summary'])}</div>")
    parts.append("<h2>Claims</h2>" + _claims_html(claims))
    figs = doc.get("figures", [])
    if figs:
        caps = doc.get("captions") or {}
        parts.append("<h2>Figures</h2>" + "".join(_figure_html(run_dir, f, caps.get(f, ""))
                                                  for f in figs))
    tables = doc.get("tables", {})
    if tables:
        parts.append("<h2>Tables</h2>" + "".join(_table_html(k, v) for k, v in tables.items()))
    parts.append("<h2>Configuration and environment</h2>")
    parts.append(f"<pre>{_e(json.dumps({'config': cfg, 'environment': env}, indent=1))}</pre>")
    if doc.get("log"):
        parts.append("<details><summary>log</summary><pre>"
                     + _e("\n".join(doc["log"])) + "</pre></details>")
    parts.append("</body></html>")
    return "\n".join(parts)


def find_runs(out: str | Path) -> list[tuple[str, Path, dict]]:
    """Finished runs under ``out`` as (experiment, run folder, result document), newest
    first within each experiment; experiments sorted by name. Partial folders skipped."""
    out = Path(out)
    runs: list[tuple[str, Path, dict]] = []
    if not out.is_dir():
        return runs
    for exp_dir in sorted(p for p in out.iterdir() if p.is_dir() and not p.name.startswith(".")):
        found = []
        for run_dir in exp_dir.iterdir():
            if not is_complete_run(run_dir):
                continue
            try:
                doc = json.loads((run_dir / RESULT_FILE).read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            found.append((exp_dir.name, run_dir, doc))
        found.sort(key=lambda r: r[1].name, reverse=True)
        runs.extend(found)
    return runs


def write_index(out: str | Path = "runs/") -> Path:
    """Write ``<out>/index.html`` over all finished runs and return its path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    runs = find_runs(out)
    rows = ["<tr><th>experiment</th><th>run</th><th>mode</th><th>seed</th><th>claims</th>"
            "<th>wall time (s)</th><th>failing claims</th></tr>"]
    for exp, run_dir, doc in runs:
        claims = doc.get("claims", [])
        held = sum(bool(c.get("holds")) for c in claims)
        cfg = doc.get("config", {})
        link = f"{exp}/{run_dir.name}/{REPORT_FILE}"
        failing = "; ".join(c.get("name", "") for c in claims if not c.get("holds"))
        status = _mark(held == len(claims))
        rows.append(
            f"<tr><td>{_e(exp)}</td><td><a href='{_e(link)}'>{_e(run_dir.name)}</a></td>"
            f"<td>{'quick' if cfg.get('quick') else 'full'}</td>{_cell(cfg.get('seed'))}"
            f"<td>{status} {held}/{len(claims)}</td>{_cell(doc.get('wall_time_s'))}"
            f"<td>{_e(failing)}</td></tr>")
    body = ("<table>" + "".join(rows) + "</table>") if runs else "<p>No finished runs yet.</p>"
    page = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>ntkit lab runs</title>"
            f"<style>{_CSS}</style></head><body><h1>ntkit lab: runs</h1>"
            f"<p class='sub'>{len(runs)} finished runs under {_e(out.resolve())}</p>"
            f"{body}</body></html>")
    index = out / "index.html"
    tmp = out / f".index.{os.getpid()}.tmp"
    tmp.write_text(page, encoding="utf-8")
    os.replace(tmp, index)
    return index
