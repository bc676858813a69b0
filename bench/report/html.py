"""report.html: one self-contained file (figures embedded as data URIs, inline CSS, no network)
that checks itself on load: `<body data-figures-loaded data-figures-total data-main-table
data-overflow>` say whether every figure decoded, the main table is there and whether the
page is wider than the window (sideways scrolling; read by the browser test)."""

from __future__ import annotations

import base64
import html

from bench.report.document import Block, Bullets, FigureBlock, Heading, Paragraph, TableBlock
from bench.report.tables import to_html

CSS = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2rem auto; max-width: 80rem;
       padding: 0 1rem; color: #222; }
table { border-collapse: collapse; margin: .5rem 0 .25rem; font-size: 13px; display: block;
        max-width: 100%; overflow-x: auto; }
caption { text-align: left; font-weight: 600; padding-bottom: .25rem; }
th, td { padding: .2rem .6rem; border-bottom: 1px solid #ddd; text-align: right; }
td { overflow-wrap: anywhere; } td:first-child { overflow-wrap: break-word; }
td.n { white-space: nowrap; overflow-wrap: normal; }
th:first-child, td:first-child { text-align: left; }
thead th { border-bottom: 2px solid #444; }
.note { color: #555; font-size: 12px; margin-top: 0; }
figure { margin: 1rem 0; } figure img { max-width: 100%; }
figcaption { color: #444; font-size: 12px; }
nav { font-size: 13px; } code { font-size: 12px; }
"""

# Sets the body's data attributes once every image has had its chance to load.
CHECK_SCRIPT = """
window.addEventListener("load", function () {
  var imgs = Array.prototype.slice.call(document.querySelectorAll("img[data-figure]"));
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; });
  var main = document.getElementById("main-table");
  document.body.dataset.figuresTotal = imgs.length;
  document.body.dataset.figuresLoaded = ok.length;
  document.body.dataset.mainTable = main && main.tBodies[0].rows.length ? "present" : "missing";
  var page = document.documentElement;
  document.body.dataset.overflow = page.scrollWidth > page.clientWidth ? "sideways" : "none";
});
"""


def _figure(block: FigureBlock) -> str:
    fig = block.figure
    data = base64.b64encode(fig.png.read_bytes()).decode()
    e = html.escape
    return (f'<figure id="fig-{e(fig.name)}"><img data-figure="{e(fig.name)}" alt="{e(fig.title)}"'
            f' src="data:image/png;base64,{data}"><figcaption><strong>{e(fig.title)}.</strong> '
            f'{e(fig.caption)} Vector version beside this file: '
            f'<a href="{e(fig.svg.name)}">{e(fig.svg.name)}</a>.</figcaption></figure>')


def _block(block: Block) -> str:
    e = html.escape
    match block:
        case Heading(text, level, anchor):
            ident = f' id="{e(anchor)}"' if anchor else ""
            return f"<h{level}{ident}>{e(text)}</h{level}>"
        case Paragraph(text):
            return f"<p>{e(text)}</p>"
        case Bullets(items):
            return "<ul>" + "".join(f"<li>{e(i)}</li>" for i in items) + "</ul>"
        case TableBlock(table):
            note = f'<p class="note">{e(table.note)}</p>' if table.note else ""
            return to_html(table) + note
        case FigureBlock():
            return _figure(block)
    raise TypeError(f"not a report block: {block!r}")


def render_html(blocks: list[Block], title: str) -> str:
    nav = [b for b in blocks if isinstance(b, Heading) and b.level == 2 and b.anchor]
    toc = " · ".join(f'<a href="#{html.escape(h.anchor)}">{html.escape(h.text)}</a>' for h in nav)
    body = "\n".join(_block(b) for b in blocks)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>{html.escape(title)}</title><style>{CSS}</style></head>\n"
            f"<body><nav>{toc}</nav>\n{body}\n<script>{CHECK_SCRIPT}</script></body></html>\n")
