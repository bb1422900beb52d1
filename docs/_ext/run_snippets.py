"""Run every Python block of the hand-written docs pages (CI: the docs' code runs).

    python3 docs/_ext/run_snippets.py [FILE.md|FILE.rst ...]

Blocks fenced as ```python (Markdown) or written as ``.. code-block:: python`` (the
hand-written reStructuredText pages) run, each page's blocks in order in one fresh
namespace, from a temporary working directory. Markdown blocks written as
```{code-block} python (neural-tangents code, cluster set-ups) are shown but not run.
Exit status 1 names the first failing block.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
import textwrap
import time
import traceback
from pathlib import Path

DOCS = Path(__file__).resolve().parents[1]
FENCE = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
RST_BLOCK = re.compile(r"^\.\. code-block:: python\n\n((?:(?:   .*)?\n)+)", re.M)
# Generated pages (API, lab, gallery) are not hand-written snippets.
GENERATED = ("_build", "api", "auto_examples", "experiments")


def blocks_of(path: Path) -> list[str]:
    text = path.read_text()
    if path.suffix == ".md":
        return FENCE.findall(text)
    return [textwrap.dedent(b) for b in RST_BLOCK.findall(text)]


def run_page(path: Path) -> bool:
    blocks = blocks_of(path)
    ns: dict = {"__name__": "__main__"}
    for i, code in enumerate(blocks, 1):
        t0 = time.perf_counter()
        try:
            exec(compile(code, f"{path.relative_to(DOCS)} block {i}", "exec"), ns)
        except Exception:
            traceback.print_exc()
            print(f"FAILED: {path.relative_to(DOCS)}, python block {i}", file=sys.stderr)
            return False
        print(f"ok  {path.relative_to(DOCS)} block {i} ({time.perf_counter() - t0:.1f} s)",
              flush=True)
    return True


def main(argv: list[str]) -> int:
    os.environ.setdefault("MPLBACKEND", "Agg")
    pages = [Path(a).resolve() for a in argv] or sorted(
        p for ext in ("*.md", "*.rst") for p in DOCS.rglob(ext)
        if not set(GENERATED) & set(p.relative_to(DOCS).parts))
    cwd = os.getcwd()
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)
        try:
            ok = all([run_page(p) for p in pages])
        finally:
            os.chdir(cwd)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
