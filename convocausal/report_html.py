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


def memo_html(markdown: str, title: str) -> str:
    """One page: the rendered memo with its stylesheet inline; ``title`` goes in the tab name."""
    body = _renderer().render(markdown)
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            f"<title>{escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n"
            f"<body>\n<main>\n{body}</main>\n</body>\n</html>\n")
