"""Sphinx extension: generate the API reference and the lab pages before Sphinx reads sources.

- ``api/modules/<module>.rst``: one page per public module, an autosummary table of the
  names in its ``__all__`` (or, without ``__all__``, the functions and classes it defines),
  so the reference follows the package as it changes. An object exported by several modules
  is documented once, on the first page in ``API_MODULES`` that lists it; later pages link to
  it.
- ``lab/experiments/<name>.rst``: one page per registered lab experiment, from its module
  docstring (question, setup, claims) and, where a stored run exists in
  ``lab/results/<name>/`` (``result.json`` plus figures, made by ``lab/store_results.py``),
  its claims table (predicted / measured / tolerance / note) and figures. No experiment is
  run at build time.
"""

from __future__ import annotations

import importlib
import inspect
import json
import re
import shutil
from pathlib import Path

# Public modules, in the order their pages appear (an object's first page is its home).
API_MODULES = [
    ("ntkit", "Top level"),
    ("ntkit.layers", "Layers"),
    ("ntkit.models", "Ready-made architectures"),
    ("ntkit.kernel", "The Kernel record"),
    ("ntkit.predict", "Predictions and training dynamics"),
    ("ntkit.solvers", "Solvers"),
    ("ntkit.empirical", "Empirical kernels"),
    ("ntkit.linearize", "Linearization and Taylor models"),
    ("ntkit.monte_carlo", "Monte Carlo kernels"),
    ("ntkit.sklearn", "scikit-learn estimators"),
    ("ntkit.hyperparameters", "Hyperparameter fitting"),
    ("ntkit.gpytorch", "GPyTorch kernel"),
    ("ntkit.apps.kip", "Dataset distillation (KIP)"),
    ("ntkit.features", "Random features and classical kernels"),
    ("ntkit.theory", "Signal propagation (criticality)"),
    ("ntkit.theory.spectrum", "Mercer spectra and n-widths"),
    ("ntkit.theory.catapult", "Catapult dynamics"),
    ("ntkit.theory.implicit_bias", "Implicit bias"),
    ("ntkit.theory.path_counting", "Path counting"),
    ("ntkit.theory.random_matrix", "Random matrices"),
    ("ntkit.theory.sgd", "SGD noise"),
    ("ntkit.metrics", "Architecture scores and neural collapse"),
    ("ntkit.curvature", "Hessians and curvature"),
    ("ntkit.geometry", "Linear regions"),
    ("ntkit.dual", "Dual activations"),
    ("ntkit.engine.storage", "Kernels on disk"),
    ("ntkit.engine.distributed", "Dask backend"),
    ("ntkit.engine.memory", "Memory budgets"),
    ("ntkit.lab", "The lab"),
    ("ntkit.demo", "The demo"),
]


def _public_names(mod) -> list[str]:
    names = getattr(mod, "__all__", None)
    if names is None:
        names = [n for n, obj in vars(mod).items()
                 if not n.startswith("_") and (inspect.isfunction(obj) or inspect.isclass(obj))
                 and getattr(obj, "__module__", "") == mod.__name__]
    return sorted(n for n in names if n != "__version__")


def _title(text: str, ch: str = "=") -> str:
    return f"{text}\n{ch * len(text)}\n"


def write_api_pages(src: Path) -> None:
    out = src / "api" / "modules"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    seen: dict[int, str] = {}
    index = [_title("API reference"),
             "Every public name, one page per module. Shapes, conventions and examples are in "
             "each object's page; the :doc:`user guide </guide/index>` shows them at work.\n",
             ".. toctree::\n   :maxdepth: 1\n"]
    for modname, label in API_MODULES:
        mod = importlib.import_module(modname)
        documented, elsewhere, modules = [], [], []
        for name in _public_names(mod):
            obj = getattr(mod, name)
            if inspect.ismodule(obj):
                modules.append(name)
                continue
            key = id(obj)
            if (inspect.isfunction(obj) or inspect.isclass(obj)) and key in seen:
                elsewhere.append((name, seen[key]))
                continue
            if inspect.isfunction(obj) or inspect.isclass(obj):
                seen[key] = f"{modname}.{name}"
            documented.append(name)
        lines = [f".. _api-{modname}:\n", _title(f"``{modname}``: {label}"),
                 # ntkit.linearize is both a module and the function ntkit exports under
                 # that name: index the function only.
                 f".. automodule:: {modname}\n   :no-members:\n"
                 + ("   :no-index:\n" if modname == "ntkit.linearize" else ""),
                 f".. currentmodule:: {modname}\n"]
        if documented:
            lines.append(".. autosummary::\n   :toctree: ../generated\n   :nosignatures:\n")
            lines += [f"   {n}" for n in documented]
            lines.append("")
        if modules:
            lines.append("Submodules: " + ", ".join(f"``{modname}.{m}``" for m in modules)
                         + ".\n")
        if elsewhere:
            lines.append("Also exported here, documented on their home page: "
                         + ", ".join(f":py:obj:`{n} <{home}>`" for n, home in elsewhere)
                         + ".\n")
        (out / f"{modname}.rst").write_text("\n".join(lines) + "\n")
        index.append(f"   modules/{modname}")
    (src / "api" / "index.rst").write_text("\n".join(index) + "\n")


# ------------------------------------------------------------------------------- the lab
_ITEM = re.compile(r"^(\s*)[-*+]\s+")


def _blank_around_lists(lines: list[str]) -> list[str]:
    """Blank lines before and after bullet lists that a docstring written for
    the terminal runs straight into its paragraphs (RST needs them)."""
    out: list[str] = []
    in_list_indent: int | None = None
    for line in lines:
        indent = len(line) - len(line.lstrip())
        item = _ITEM.match(line)
        if not line.strip():
            in_list_indent = None
        elif item:
            if in_list_indent is None and out and out[-1].strip():
                out.append("")
            in_list_indent = indent
        elif in_list_indent is not None and indent <= in_list_indent:
            out.append("")
            in_list_indent = None
        out.append(line)
    return out


def _docstring_rst(text: str) -> str:
    """The module docstring as RST if it parses cleanly, else verbatim in a literal block."""
    from rst_sanitize import as_literal, rst_problems, sanitize

    raw = inspect.cleandoc(text or "")
    lines = sanitize(_blank_around_lists(raw.splitlines()))
    if rst_problems("\n".join(lines)):
        lines = as_literal(raw.splitlines())
    return "\n".join(lines)


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _cell(v) -> str:
    from rst_sanitize import sanitize_line

    s = sanitize_line(_fmt(v).replace("\n", " "))
    return s if s.strip() else "—"


def write_lab_pages(src: Path) -> None:
    import ntkit.lab as lab
    from ntkit.lab import registry

    out = src / "lab" / "experiments"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    results = src / "lab" / "results"
    names = []
    for name, description in lab.list():
        exp = registry.get(name)
        mod = importlib.import_module(exp.fn.__module__)
        from rst_sanitize import sanitize_line

        description = sanitize_line(description)
        lines = [f".. _lab-{name}:\n", _title(f"``{name}``"), f"{description}\n",
                 f"Run it: ``ntkit lab run {name}`` (full) or ``ntkit lab run {name} --quick``; "
                 f"the report lands in ``runs/{name}/<timestamp>/report.html``. Source: "
                 f"``{exp.fn.__module__}``.\n",
                 _title("Question, setup and claims", "-"),
                 _docstring_rst(mod.__doc__ or exp.fn.__doc__ or "") + "\n"]
        stored = results / name / "result.json"
        if stored.exists():
            res = json.loads(stored.read_text())
            cfg = res.get("config", {})
            mode = "quick" if cfg.get("quick") else "full"
            lines += [_title("Stored run", "-"),
                      f"Mode **{mode}**, seed {cfg.get('seed')}, "
                      f"{res.get('n_holding')} of {res.get('n_claims')} claims hold, "
                      f"{res.get('wall_time_s', float('nan')):.0f} s "
                      f"(started {res.get('started', '?')}; "
                      f"torch {res.get('environment', {}).get('torch', '?')}). Command: "
                      f"``ntkit lab run {name}{' --quick' if mode == 'quick' else ''} "
                      f"--seed {cfg.get('seed')}``. A quick run is sized for CI: its "
                      "numbers are noisier than the full run's, and a claim may fail "
                      "in quick mode only.\n"]
            if res.get("summary"):
                lines += ["::\n", *["   " + s for s in str(res["summary"]).splitlines()], ""]
            lines += [".. list-table::\n   :header-rows: 1\n   :widths: 3 3 46 16 16 16\n",
                      "   * - #\n     - \n     - claim\n     - predicted\n     - measured\n"
                      "     - tolerance"]
            claims = res.get("claims", [])
            for i, c in enumerate(claims, 1):
                mark = "✓" if c.get("holds") else "✗"
                lines.append(f"   * - {i}\n     - {mark}\n     - {_cell(c.get('name'))}\n"
                             f"     - {_cell(c.get('predicted'))}\n"
                             f"     - {_cell(c.get('measured'))}\n"
                             f"     - {_cell(c.get('tolerance'))}")
            lines.append("")
            notes = [(i, c.get("note")) for i, c in enumerate(claims, 1) if c.get("note")]
            if notes:
                lines.append("Notes on the claims (why each tolerance, what a failure means):\n")
                lines += [f"- **{i}.** {_cell(note)}" for i, note in notes]
                lines.append("")
            for fig in res.get("figures", []):
                if (results / name / fig).exists():
                    lines.append(f".. figure:: ../results/{name}/{fig}\n   :width: 90%\n\n"
                                 f"   ``{fig}`` from the stored run.\n")
        else:
            lines += [_title("Results", "-"),
                      f"No stored run ships with the docs; ``ntkit lab run {name} --quick`` "
                      "makes one in seconds to minutes.\n"]
        (out / f"{name}.rst").write_text("\n".join(lines) + "\n")
        names.append((name, description))
    toc = ["..", "   generated by docs/_ext/ntkit_docs.py", "",
           ".. toctree::", "   :hidden:", ""] + [f"   experiments/{n}" for n, _ in names]
    table = [".. list-table::", "   :header-rows: 1", "   :widths: 25 75", "",
             "   * - experiment", "     - what it measures"]
    for n, d in names:
        table += [f"   * - :ref:`{n} <lab-{n}>`", f"     - {d}"]
    (out / "index.rst.inc").write_text("\n".join(toc + [""] + table) + "\n")


def _generate(app, config=None) -> None:
    src = Path(app.srcdir)
    write_api_pages(src)
    write_lab_pages(src)


def setup(app):
    # config-inited: before Sphinx lists the source files, so autosummary sees the pages.
    app.connect("config-inited", _generate)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
