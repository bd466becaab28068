"""The memo's HTML page (issue 18): ``<store>.parts/reports/<question>.html``, self-contained, opened
in headless Chromium.

The screenshot must show the page (not a blank or error page) and the plots: the test's plots are
flat magenta, a colour nothing else on the page has, so magenta pixels in the screenshot mean the
inline ``data:`` images were decoded and drawn. Text from the data is escaped, never run.
Chromium missing skips the browser test only outside CI (``.ci/run`` installs it); in CI it fails.
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
from html.parser import HTMLParser

import pytest

from convocausal.report import decision_memo, write_memo
from tests.memo_cases import MAGENTA, PLANTED_HTML, stored_case


class _Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.imgs, self.scripts, self.tables, self.text = [], 0, 0, []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.imgs.append(dict(attrs))
        self.scripts += tag == "script"
        self.tables += tag == "table"

    def handle_data(self, data):
        self.text.append(data)


@pytest.fixture()
def page(tmp_path):
    paths, question, result, _ = stored_case(tmp_path)
    out = write_memo(paths, question.id, decision_memo(paths, question))
    return out["html"], result


def test_html_is_self_contained_with_inline_plots(page):
    html_path, result = page
    html = html_path.read_text(encoding="utf-8")
    parsed = _Page()
    parsed.feed(html)
    assert parsed.tables >= 1  # the checks table is a real <table>, not pipes in a paragraph
    srcs = [i["src"] for i in parsed.imgs]
    assert len(srcs) == len(result.plots)
    prefix = "data:image/png;base64,"
    assert all(s.startswith(prefix) for s in srcs)
    assert sorted(base64.b64decode(s[len(prefix):]) for s in srcs) == sorted(result.plots.values())


def test_text_from_the_data_is_escaped(page):
    html_path, _ = page
    parsed = _Page()
    parsed.feed(html_path.read_text(encoding="utf-8"))
    assert parsed.scripts == 0  # the planted <script> in a diagnostic message is not markup ...
    assert PLANTED_HTML in "".join(parsed.text)  # ... it is shown as the text it is


def test_page_equals_a_plain_render_of_the_memo(tmp_path):
    """The plots' URIs stand aside while the text is parsed (speed); the page is exactly what markdown-it
    gives for the memo as it is, on a stored memo with its plots and on the link check's edge cases (an
    image in a table cell, in a link, a refused ``data:text/html`` URI, a token-looking word)."""
    from convocausal.report_html import _renderer, memo_html

    paths, question, _, _ = stored_case(tmp_path)
    memo = decision_memo(paths, question).markdown_inline
    png = "data:image/png;base64," + base64.b64encode(bytes(range(256)) * 40).decode()
    edge = (memo + f"\n\n| a | b |\n|---|---|\n| ![x]({png}) | [y]({png}) |\n\n![bad](data:text/html;base64,PHNjcmlwdD4=)"
            f"\n\n![gif](data:image/gif;base64,R0lGODlh) cc00img0x ![jpeg]( {png} )\n")
    for text in (memo, edge):
        assert "data:image/png;base64," in text
        plain = _renderer().render(text)
        page = memo_html(text, title="t")
        assert page[page.index("<main>\n") + len("<main>\n"):page.index("</main>")] == plain


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("headless Chromium is required in CI (.ci/run installs Debian's chromium)")
        pytest.skip("headless Chromium is not installed on this machine (`apt-get install chromium`; CI installs it)")
    return found


@pytest.mark.browser
def test_browser_screenshot_shows_the_memo_and_its_plots(page, tmp_path):
    from PIL import Image

    chromium = _chromium()
    html_path, result = page
    shot = tmp_path / "memo.png"
    subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
         f"--user-data-dir={tmp_path / 'chrome'}", "--window-size=1200,2600", "--hide-scrollbars",
         "--virtual-time-budget=10000", f"--screenshot={shot}", html_path.as_uri()],
        check=True, timeout=120, capture_output=True,
    )
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    img = Image.open(shot).convert("RGB")
    assert img.size == (1200, 2600)
    colours = img.getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 50, "a blank page has a handful of colours; text has many"
    magenta = sum(n for n, c in colours if max(abs(a - b) for a, b in zip(c, MAGENTA)) <= 8)
    side = 240  # each test plot is 240 px square at the page's 1:1 scale
    assert magenta >= 0.9 * len(result.plots) * side * side, "the inline plots were not drawn"
    out = os.environ.get("CONVOCAUSAL_SCREENSHOT_DIR")
    if out:
        os.makedirs(out, exist_ok=True)
        shutil.copy(shot, os.path.join(out, "memo.png"))
