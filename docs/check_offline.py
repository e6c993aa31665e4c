"""Check that the built HTML documentation works offline.

Usage (after the html build; CI runs it)::

    python docs/check_offline.py docs/_build/html

Every ``.html`` page is parsed. The check fails (exit 1, one line per problem) when a
page

* loads a script, stylesheet, font, image or frame from the network (an ``http://``,
  ``https://`` or ``//`` address in ``<script src>``, ``<link href>`` of a stylesheet,
  preload, font or icon, ``<img src>``, ``<iframe src>``), a MathJax CDN above all;
* names a known CDN host anywhere in its text (inline scripts included);
* refers to a local script or stylesheet that is not in the build;
* shows math (``class="math"``) without a local MathJax script.

Links a reader clicks (``<a href>``) may point anywhere. Exit 2 when the folder holds
no page.
"""

from __future__ import annotations

import argparse
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

CDN_HOSTS = (
    "cdn.jsdelivr.net",
    "cdnjs.cloudflare.com",
    "unpkg.com",
    "cdn.mathjax.org",
    "polyfill.io",
    "fonts.googleapis.com",
    "fonts.gstatic.com",
    "ajax.googleapis.com",
    "code.jquery.com",
)
# <link rel=...> values whose href the browser fetches while rendering the page.
FETCHED_LINK_RELS = {"stylesheet", "preload", "modulepreload", "icon", "shortcut", "apple-touch-icon", "prefetch"}


def _is_remote(url: str) -> bool:
    url = url.strip()
    return url.startswith("//") or urlsplit(url).scheme in ("http", "https")


class _Page(HTMLParser):
    """Collects what a page fetches: ``(tag, attribute, url)`` triples, and whether it shows math."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.fetched: list[tuple[str, str, str]] = []
        self.has_math = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: (v or "") for k, v in attrs}
        if "math" in a.get("class", "").split():
            self.has_math = True
        if tag == "script" and a.get("src"):
            self.fetched.append((tag, "src", a["src"]))
        elif tag == "link" and a.get("href"):
            rels = set(a.get("rel", "").lower().split())
            if rels & FETCHED_LINK_RELS:
                self.fetched.append((tag, "href", a["href"]))
        elif tag in ("img", "iframe", "source", "audio", "video", "embed") and a.get("src"):
            self.fetched.append((tag, "src", a["src"]))


def check_page(path: Path, root: Path) -> list[str]:
    """The problems of one page, as ``"<page>: <what>"`` lines (empty when it works offline)."""
    text = path.read_text(encoding="utf-8", errors="replace")
    page = _Page()
    page.feed(text)
    rel = path.relative_to(root).as_posix()
    problems = []
    for host in CDN_HOSTS:
        if host in text:
            problems.append(f"{rel}: names the CDN host {host}")
    mathjax_local = False
    for tag, attr, url in page.fetched:
        if _is_remote(url):
            problems.append(f"{rel}: <{tag} {attr}> loads {url} from the network")
            continue
        if url.startswith(("data:", "#")):
            continue
        local = (path.parent / unquote(urlsplit(url).path)).resolve()
        if tag in ("script", "link") and not local.is_file():
            problems.append(f"{rel}: <{tag} {attr}> refers to {url}, which is not in the build")
        elif tag == "script" and "mathjax" in url.lower():
            mathjax_local = True
    if page.has_math and not mathjax_local:
        problems.append(f"{rel}: shows math but loads no local MathJax script")
    return problems


def check_dir(root: Path) -> tuple[int, list[str]]:
    """``(number of pages, problems)`` for every ``.html`` file under ``root``."""
    root = Path(root)
    pages = sorted(root.rglob("*.html"))
    problems: list[str] = []
    for page in pages:
        problems.extend(check_page(page, root))
    return len(pages), problems


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python docs/check_offline.py", description=__doc__.split("\n")[0])
    p.add_argument("html_dir", nargs="?", default="docs/_build/html", help="the html build (default: %(default)s)")
    args = p.parse_args(argv)
    root = Path(args.html_dir)
    n_pages, problems = check_dir(root)
    if n_pages == 0:
        print(f"no .html page under {root}: build the docs first "
              "(python -m sphinx -W --keep-going -b html docs docs/_build/html)", file=sys.stderr)
        return 2
    for line in problems:
        print(line, file=sys.stderr)
    if problems:
        print(f"{len(problems)} problem(s) in {n_pages} pages: the docs would not work offline", file=sys.stderr)
        return 1
    print(f"{n_pages} pages checked: no page loads anything from the network; math uses the shipped MathJax")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
