"""A report as a list of blocks, rendered twice: ``report.md`` and a self-contained ``report.html``.

The reports build their headings, paragraphs and tables once as blocks; :func:`to_markdown` and
:func:`to_html` only render them, so the two files always hold the same numbers. The HTML page adds
what Markdown cannot hold: audio players side by side (:class:`Listening`). It opens from the file
system: every link is relative, the CSS is inline, there is no script and nothing is fetched.
"""

from __future__ import annotations

import dataclasses
import html
import re
from collections.abc import Sequence


@dataclasses.dataclass
class Heading:
    text: str
    level: int = 2


@dataclasses.dataclass
class Text:
    """A paragraph; its lines stay separate lines in Markdown. Backticks mark code, as in Markdown."""

    lines: list[str]


@dataclasses.dataclass
class Table:
    head: list[str]
    rows: list[list[str]]


@dataclasses.dataclass
class Bullets:
    items: list[str]


@dataclasses.dataclass
class Images:
    """PNGs next to the report: ``(relative path, alt text)``."""

    images: list[tuple[str, str]]


@dataclasses.dataclass
class Clip:
    """One cell of a listening table: an audio file (relative path) and what was said or heard in it."""

    audio: str | None = None
    texts: list[tuple[str, str]] = dataclasses.field(default_factory=list)  # (label, text)
    note: str | None = None  # shown in place of a player that is missing, e.g. "no speech"


@dataclasses.dataclass
class ListeningRow:
    label: str  # the condition the input was heard under
    input: Clip | None
    outputs: dict[str, Clip]  # variant -> its output; a missing variant gets an empty cell


@dataclasses.dataclass
class ListeningItem:
    title: str
    input_label: str
    rows: list[ListeningRow]


@dataclasses.dataclass
class Listening:
    """Audio players side by side: per test item, the input under each condition, then each variant's output.

    In Markdown, a list of links to the same files."""

    variants: list[str]
    items: list[ListeningItem]

    def files(self) -> list[str]:
        clips = [c for it in self.items for r in it.rows for c in [r.input, *r.outputs.values()] if c is not None]
        return list(dict.fromkeys(c.audio for c in clips if c.audio))


Block = Heading | Text | Table | Bullets | Images | Listening


# ------------------------------------------------------------------------------------------ Markdown
def to_markdown(blocks: Sequence[Block]) -> str:
    return "\n\n".join(_md(b) for b in blocks) + "\n"


def _md(b: Block) -> str:
    if isinstance(b, Heading):
        return "#" * b.level + " " + b.text
    if isinstance(b, Text):
        return "\n".join(b.lines)
    if isinstance(b, Table):
        lines = ["| " + " | ".join(b.head) + " |", "|" + "---|" * len(b.head)]
        return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in b.rows])
    if isinstance(b, Bullets):
        return "\n".join(f"- {i}" for i in b.items)
    if isinstance(b, Images):
        return "\n".join(f"![{alt}]({p})" for p, alt in b.images)
    if isinstance(b, Listening):
        return "\n".join(f"- [{f}]({f})" for f in b.files())
    raise TypeError(f"not a report block: {b!r}")


# ---------------------------------------------------------------------------------------------- HTML
CSS = """
body { font: 15px/1.45 system-ui, sans-serif; margin: 1.5em auto; max-width: 1400px; padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 1.8em; border-bottom: 1px solid #ddd; }
h3 { font-size: 1.05em; margin: 1.4em 0 0.4em; }
table { border-collapse: collapse; margin: 0.6em 0; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; vertical-align: top; }
th { background: #f3f3f3; text-align: left; }
table.numbers td { font-variant-numeric: tabular-nums; white-space: nowrap; }
table.listen { width: 100%; table-layout: fixed; }
table.listen th:first-child, table.listen td:first-child { width: 8em; }
audio { width: 100%; min-width: 10em; height: 2.2em; display: block; }
.said { font-size: 0.9em; margin-top: 0.25em; overflow-wrap: anywhere; }
.said b { font-weight: 600; color: #555; }
.none { color: #999; font-style: italic; }
code { background: #f3f3f3; padding: 0 0.2em; overflow-wrap: anywhere; }
p, li { overflow-wrap: anywhere; }
.plots { display: flex; flex-wrap: wrap; gap: 0.8em; }
.plots img { box-sizing: border-box; width: calc(50% - 0.5em); min-width: 320px; max-width: 660px; }
.plots img { border: 1px solid #eee; }
"""


def to_html(blocks: Sequence[Block], title: str) -> str:
    body = "\n".join(_html(b) for b in blocks)
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n"
    )


def inline(text: str) -> str:
    """``text`` escaped for HTML, with Markdown's `code` spans as <code> and its **strong** spans as <strong>
    (a lone ``*``, the reports' mark of a tested difference, stays as it is)."""
    coded = re.sub(r"`([^`]*)`", r"<code>\1</code>", html.escape(text))
    return re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", coded)


def _attr(path: str) -> str:
    return html.escape(path, quote=True)


def _html(b: Block) -> str:
    if isinstance(b, Heading):
        return f"<h{b.level}>{inline(b.text)}</h{b.level}>"
    if isinstance(b, Text):
        return "<p>" + "<br>\n".join(inline(x) for x in b.lines) + "</p>"
    if isinstance(b, Table):
        head = "".join(f"<th>{inline(h)}</th>" for h in b.head)
        rows = "\n".join("<tr>" + "".join(f"<td>{inline(c)}</td>" for c in r) + "</tr>" for r in b.rows)
        return f'<table class="numbers">\n<tr>{head}</tr>\n{rows}\n</table>'
    if isinstance(b, Bullets):
        return "<ul>\n" + "\n".join(f"<li>{inline(i)}</li>" for i in b.items) + "\n</ul>"
    if isinstance(b, Images):
        imgs = "\n".join(f'<img src="{_attr(p)}" alt="{_attr(alt)}">' for p, alt in b.images)
        return f'<div class="plots">\n{imgs}\n</div>'
    if isinstance(b, Listening):
        return "\n".join(_listening_item(it, b.variants) for it in b.items)
    raise TypeError(f"not a report block: {b!r}")


def _clip(c: Clip | None, empty: str = "no output") -> str:
    if c is None or (c.audio is None and not c.texts and not c.note):
        return f'<td><span class="none">{html.escape(empty)}</span></td>'
    parts = []
    if c.audio:
        # preload="metadata": the players show their length at once without fetching every file in full
        parts.append(f'<audio controls preload="metadata" src="{_attr(c.audio)}"></audio>')
    elif c.note:
        parts.append(f'<span class="none">{html.escape(c.note)}</span>')
    for label, text in c.texts:
        shown = inline(text) if text else '<span class="none">(empty)</span>'
        parts.append(f'<div class="said"><b>{html.escape(label)}:</b> {shown}</div>')
    return "<td>" + "".join(parts) + "</td>"


def _listening_item(item: ListeningItem, variants: list[str]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in ["condition", item.input_label, *variants])
    rows = [
        f"<tr><td>{html.escape(r.label)}</td>{_clip(r.input, '—')}" + "".join(_clip(r.outputs.get(v)) for v in variants)
        for r in item.rows
    ]
    return (
        f'<h3>{inline(item.title)}</h3>\n<table class="listen">\n<tr>{head}</tr>\n'
        + "\n".join(r + "</tr>" for r in rows)
        + "\n</table>"
    )
