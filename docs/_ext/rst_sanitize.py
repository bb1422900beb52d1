"""Escape stray RST inline markup in plain-text docstrings.

ntkit's docstrings are written to be read in a terminal (``help()``): they use ``|x|`` for
absolute values and ``*`` in shapes such as ``(*t.shape, m)``, which reStructuredText reads
as substitutions and emphasis. `sanitize` escapes a ``|`` or ``*`` that does not belong to
well-formed markup, outside inline literals, roles and literal blocks, so the rendered
page shows the characters the author typed.
"""

from __future__ import annotations

import re

# Spans left alone: ``literal``, :role:`target`, `interpreted`, already escaped characters.
_CODE = re.compile(r"(``.+?``|:[\w:.+-]+:`[^`]*`|`[^`]*`_{0,2}|\\.)")
# Well-formed emphasis/strong: *word ...* / **word ...** (no space inside the delimiters).
_EMPH = re.compile(r"(?<![\w*\\])(\*\*[^\s*](?:[^*]*?[^\s*\\])?\*\*|\*[^\s*](?:[^*]*?[^\s*\\])?\*)"
                   r"(?![\w*])")
_BULLET = re.compile(r"^(\s*)([*+-])(\s+)")


# A word ending in "_" (scikit-learn's fitted attributes, ``coef_``) is an RST reference.
_TRAILING_UNDERSCORE = re.compile(r"(?<=\w)_(?=[^\w]|$)")


def _escape_text(text: str) -> str:
    text = _TRAILING_UNDERSCORE.sub(r"\\_", text)
    out, last = [], 0
    for m in _EMPH.finditer(text):
        out.append(text[last:m.start()].replace("*", r"\*").replace("|", r"\|"))
        out.append(m.group(0).replace("|", r"\|"))
        last = m.end()
    out.append(text[last:].replace("*", r"\*").replace("|", r"\|"))
    return "".join(out)


def sanitize_line(line: str) -> str:
    bullet = _BULLET.match(line)
    head, body = (line[:bullet.end()], line[bullet.end():]) if bullet else ("", line)
    if body.lstrip().startswith((">>>", "...", ".. ")):
        return line
    parts = _CODE.split(body)
    # split() with one group: odd indices are the protected spans.
    return head + "".join(p if i % 2 else _escape_text(p) for i, p in enumerate(parts))


def sanitize(lines: list[str]) -> list[str]:
    out: list[str] = []
    literal_indent: int | None = None
    for line in lines:
        stripped = line.strip()
        indent = len(line) - len(line.lstrip())
        if literal_indent is not None:
            if not stripped or indent > literal_indent:
                out.append(line)
                continue
            literal_indent = None
        if stripped.startswith(".. ") and "::" in stripped:      # a directive: keep its body
            out.append(line)
            literal_indent = indent
            continue
        out.append(sanitize_line(line) if stripped else line)
        if stripped.endswith("::"):
            literal_indent = indent
    return out


# Messages that plain docutils gives for Sphinx-only markup, which Sphinx itself resolves.
_SPHINX_ONLY = ("Unknown interpreted text role", "Unknown directive type",
                'No role entry for', 'No directive entry for', "Trying")


def rst_problems(text: str) -> list[str]:
    """Messages (level ≥ 2) that docutils reports for ``text``, Sphinx-only markup aside."""
    from docutils.core import publish_doctree

    # Inside a Sphinx build its roles and directives are registered with docutils and need
    # Sphinx's environment: check the structure with them neutralized (roles and
    # interpreted text become literals, directives comments).
    text = re.sub(r"``.+?``", "LIT", text, flags=re.S)
    text = re.sub(r"(?::[\w:.+-]+:)?`[^`]+`_{0,2}", "LIT", text)
    text = re.sub(r"^(\s*)\.\. [\w:-]+::", r"\1..", text, flags=re.M)
    try:
        tree = publish_doctree(text, settings_overrides={
            "report_level": 5, "halt_level": 5, "warning_stream": False})
    except Exception:          # a parser failure is a problem too
        return ["docutils could not parse the docstring"]
    msgs = [m.astext() for m in tree.findall(lambda n: n.tagname == "system_message")
            if int(m["level"]) >= 2]
    return [m for m in msgs if not any(s in m for s in _SPHINX_ONLY)]


def as_literal(lines: list[str]) -> list[str]:
    """The docstring verbatim, as it reads in ``help()``, in a literal block."""
    return ["::", ""] + ["   " + line for line in lines] + [""]


def _process_docstring(app, what, name, obj, options, lines) -> None:
    original = list(lines)
    lines[:] = sanitize(lines)
    if lines and rst_problems("\n".join(lines)):
        # Show what the author wrote (before napoleon turned sections into fields).
        import inspect

        raw = inspect.getdoc(obj) if what in ("module", "class", "exception", "function",
                                               "method") else None
        lines[:] = as_literal(raw.splitlines() if raw else original)


def _skip_foreign(app, what, name, obj, skip, options):
    # Members that ntkit classes inherit or get from other libraries (scikit-learn's
    # `score`, its generated `set_*_request`, torch's Module methods) are documented there.
    mod = getattr(obj, "__module__", None) or ""
    if callable(obj) and mod and not mod.startswith("ntkit"):
        return True
    return None


def setup(app):
    app.connect("autodoc-process-docstring", _process_docstring, priority=900)
    app.connect("autodoc-skip-member", _skip_foreign)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
