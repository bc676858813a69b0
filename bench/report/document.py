"""The report as a list of blocks, written once and rendered to Markdown here and to HTML in
bench/report/html.py, so report.md and report.html always say the same thing."""

from __future__ import annotations

from dataclasses import dataclass

from bench.report.figures import Figure
from bench.report.tables import Table, to_markdown


@dataclass(frozen=True)
class Heading:
    text: str
    level: int = 2
    anchor: str = ""


@dataclass(frozen=True)
class Paragraph:
    text: str


@dataclass(frozen=True)
class Bullets:
    items: tuple[str, ...]


@dataclass(frozen=True)
class TableBlock:
    table: Table


@dataclass(frozen=True)
class FigureBlock:
    figure: Figure


Block = Heading | Paragraph | Bullets | TableBlock | FigureBlock


def render_markdown(blocks: list[Block]) -> str:
    parts: list[str] = []
    for block in blocks:
        match block:
            case Heading(text, level, _):
                parts.append("#" * level + " " + text)
            case Paragraph(text):
                parts.append(text)
            case Bullets(items):
                parts.append("\n".join(f"- {item}" for item in items))
            case TableBlock(table):
                lines = [f"**{table.title}**", "", to_markdown(table)]
                if table.note:
                    lines += ["", f"_{table.note}_"]
                parts.append("\n".join(lines))
            case FigureBlock(fig):
                parts.append(f"![{fig.title}]({fig.png.name})\n\n_{fig.caption}_ "
                             f"(vector: [{fig.svg.name}]({fig.svg.name}))")
    return "\n\n".join(parts) + "\n"
