"""Check that every internal link of the built HTML site resolves (no network).

    python3 docs/_ext/check_links.py docs/_build/html

For each ``href``/``src`` in each page that is not external (http:, https:, mailto:,
data:), the target file must exist and, for ``#fragment`` links, an element with that id
(or a named anchor) must exist in it. Exit status 1 lists the broken links.
"""

from __future__ import annotations

import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

EXTERNAL = ("http:", "https:", "mailto:", "data:", "javascript:", "ftp:")


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.links: list[str] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag, attrs) -> None:
        a = dict(attrs)
        for key in ("id", "name"):
            if a.get(key):
                self.ids.add(a[key])
        for key in ("href", "src"):
            if a.get(key) is not None and not (tag == "link" and a.get("rel") == "canonical"):
                self.links.append(a[key])


def parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8", errors="replace"))
    return page


def main(root: str) -> int:
    base = Path(root).resolve()
    # _static/ holds the theme's template fragments, not pages of the site.
    pages = sorted(p for p in base.rglob("*.html") if "_static" not in p.relative_to(base).parts)
    if not pages:
        print(f"no HTML under {base}", file=sys.stderr)
        return 1
    cache: dict[Path, _Page] = {}
    broken: list[str] = []
    n_links = 0
    for page_path in pages:
        page = cache.setdefault(page_path, parse(page_path))
        for link in page.links:
            if not link or link.startswith(EXTERNAL) or link.startswith("//"):
                continue
            n_links += 1
            parts = urlsplit(link)
            target = page_path if not parts.path else (page_path.parent / unquote(parts.path))
            target = target.resolve()
            if target.is_dir():
                target = target / "index.html"
            if not target.exists():
                broken.append(f"{page_path.relative_to(base)}: {link} (no file)")
                continue
            if parts.fragment and target.suffix == ".html":
                tpage = cache.setdefault(target, parse(target))
                if unquote(parts.fragment) not in tpage.ids:
                    broken.append(f"{page_path.relative_to(base)}: {link} (no anchor)")
    for b in broken:
        print(b)
    print(f"{len(pages)} pages, {n_links} internal links, {len(broken)} broken")
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "docs/_build/html"))
