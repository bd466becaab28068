"""The decision memo as one self-contained HTML page (``<store>.parts/reports/<question>.html``).

Why a page beside the Markdown: a memo is read by people who open a file from a shared folder
or a link in a ticket, without pandoc or the Dagster UI; a browser is what they have. The page
is rendered from the very Markdown the Dagster UI shows (plots as ``data:`` URIs), so the two
never say different things, and it needs nothing next to it: it can be mailed or copied alone.

Rendering is markdown-it-py (CommonMark plus tables), already installed as a dependency of
Dagster's ``rich``. Raw HTML in the Markdown is not passed through (``html: False``): messages
carry label values from the data (skills, versions, intents), so a ``<script>`` in a label is
shown as text, never run. markdown-it's link check admits ``data:image/png`` and refuses other
``data:`` and ``javascript:`` URLs.
"""

from __future__ import annotations

import logging
import re
import uuid
from html import escape

from markdown_it import MarkdownIt

# markdown-it logs every block rule it tries at DEBUG: a run at log level DEBUG (Dagster's
# launchpad, the privacy test) got thousands of lines per memo and spent its time formatting them
logging.getLogger("markdown_it").setLevel(logging.INFO)

_CSS = """
body { font: 16px/1.5 -apple-system, "Segoe UI", "DejaVu Sans", "Liberation Sans", sans-serif;
       color: #1d1d1f; max-width: 62rem; margin: 2rem auto; padding: 0 1.25rem; }
h1 { font-size: 1.7rem; border-bottom: 2px solid #34495e; padding-bottom: .3rem; }
h2 { font-size: 1.3rem; margin-top: 2rem; border-bottom: 1px solid #ddd; padding-bottom: .2rem; }
h3 { font-size: 1.1rem; margin-top: 1.5rem; }
table { border-collapse: collapse; margin: 1rem 0; font-size: .92rem; width: 100%; }
th, td { border: 1px solid #ccc; padding: .3rem .55rem; text-align: left; vertical-align: top; }
th:nth-child(2), th:nth-child(3), td:nth-child(2), td:nth-child(3) { white-space: nowrap; }
td:last-child, td code, li { overflow-wrap: anywhere; }  /* long identifiers from the data wrap, not overflow */
th { background: #f1f3f7; }
tr:nth-child(even) td { background: #fafbfc; }
code { font-family: "DejaVu Sans Mono", "Liberation Mono", monospace; font-size: .88em;
       background: #f3f3f3; padding: 0 .2em; border-radius: 3px; }
img { max-width: 100%; height: auto; border: 1px solid #e3e3e3; margin: .5rem 0 1rem; }
li { margin: .25rem 0; }
strong { color: #000; }
"""


def _renderer() -> MarkdownIt:
    return MarkdownIt("commonmark", {"html": False}).enable("table")


# The image URIs markdown-it's link check admits (``validateLink``), base64 only: their characters are all ones
# its link normalization leaves as they are, so a URI can stand aside while the text is parsed.
_DATA_IMAGE = re.compile(r"data:image/(?:gif|png|jpeg|webp);base64,[A-Za-z0-9+/=]+")


def memo_html(markdown: str, title: str) -> str:
    """One page: the rendered memo with its stylesheet inline; ``title`` goes in the tab name.

    The plots' ``data:`` URIs are swapped for short tokens while markdown-it parses the text and put
    back after: its inline parser walks a link destination character by character in Python, and a
    memo's five plots (≈ 0.5 MB of base64) took 0.4 s per memo to parse. The page is the same
    (``tests/test_report_html.py`` compares it with a plain render)."""
    images: list[str] = []
    nonce = uuid.uuid4().hex

    def stash(m: re.Match) -> str:
        images.append(m.group(0))
        return f"cc{nonce}img{len(images) - 1}x"

    body = _renderer().render(_DATA_IMAGE.sub(stash, markdown))
    if images:
        body = re.sub(f"cc{nonce}img([0-9]+)x", lambda m: images[int(m.group(1))], body)
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            f"<title>{escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n"
            f"<body>\n<main>\n{body}</main>\n</body>\n</html>\n")
