"""The demo's report page: one HTML file that explains itself in a browser.

Self-contained: no scripts, no fonts or styles fetched from anywhere; its pictures are PNG files
beside it, referenced by relative paths, so the folder can be moved or zipped as a whole.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from html import escape
from typing import Any, Sequence

_CSS = """
body { font: 15px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1180px; padding: 0 1em;
       color: #222; }
h1 { margin-bottom: 0.2em; } h2 { margin-top: 2.2em; border-bottom: 1px solid #ccc; }
code, pre { font-family: ui-monospace, monospace; font-size: 13px; }
pre { background: #f6f6f6; padding: 0.6em; overflow-x: auto; }
table { border-collapse: collapse; margin: 0.6em 0; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th.paper, td.paper { background: #f3f3f3; color: #555; font-style: italic; }
.note { color: #555; font-size: 13px; }
.gallery { display: flex; flex-wrap: wrap; gap: 1.2em; }
.gallery figure { margin: 0; width: 540px; }
.gallery img { width: 100%; border: 1px solid #ddd; }
.gallery table { font-size: 13px; margin: 0.3em 0; }
.curves { display: flex; flex-wrap: wrap; gap: 1.2em; }
.curves figure { margin: 0; } .curves img { width: 460px; border: 1px solid #ddd; }
"""

_WORDS = {"ar": "AR", "pq": "PQ", "sq": "SQ", "rq": "RQ", "oiou": "oIoU", "miou": "mIoU",
          "acc@0.5": "Acc@0.5"}


@dataclass
class GalleryEntry:
    """One picture of a gallery: ground truth beside prediction, and the IoU of each part."""

    picture: str                    # path relative to the page
    label: str                      # what the item is ("image 2000017")
    mean_iou: float
    ious: list[tuple[str, float]]


@dataclass
class ModelReport:
    """What the page shows of one evaluated checkpoint."""

    name: str                       # "ppmn-synthetic", or a training folder's name
    model_type: str
    source: str                     # where it comes from, for people
    metrics: dict[str, float]       # the family's log metrics (fractions)
    table: str                      # the family's text table, as ``groundkit evaluate`` prints
    files: list[str]                # what was written for it, relative to the page ("DIR/": a folder)
    plot: str | None                # its curves, relative to the page (None: the family has none)
    gallery: list[GalleryEntry]
    scored: int | None              # items with a scored part (None: no gallery asked for)
    unit: str                       # "narratives", "images", "expressions"
    seconds: dict[str, float] = field(default_factory=dict)   # step -> wall time


@dataclass
class FamilySection:
    """A task family and the checkpoints of it that were evaluated."""

    name: str                       # "grounding"
    heading: str
    metric_note: str
    case_note: str
    models: list[ModelReport]
    papers: list[Any]               # groundkit.models.published.Published of its model types


def metric_label(key: str) -> str:
    """``"ar_things"`` -> ``"AR things"``, ``"acc@0.5"`` -> ``"Acc@0.5"``."""
    first, _, rest = key.partition("_")
    return f"{_WORDS.get(first, first)} {rest}".strip()


def render_page(title: str, intro: str, sections: Sequence[FamilySection], outro: str = "") -> str:
    """The whole page; ``intro`` and ``outro`` are HTML, everything else is escaped here."""
    nav = " · ".join(f'<a href="#{escape(s.name)}">{escape(s.heading.split(":")[0])}</a>'
                     for s in sections)
    body = "\n".join(_section(s) for s in sections)
    return (f"<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>{escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
            f"<h1>{escape(title)}</h1>\n{intro}\n<p>{nav}</p>\n{body}\n{outro}\n</body>\n</html>\n")


def _section(s: FamilySection) -> str:
    parts = [f'<h2 id="{escape(s.name)}">{escape(s.heading)}</h2>',
             f"<p>{escape(s.metric_note)}</p>", _scores_table(s)]
    for m in s.models:
        files = ", ".join(f"<code>{escape(f)}</code>" if f.endswith("/")  # a folder
                          else f'<a href="{escape(f)}">{escape(f)}</a>' for f in m.files)
        parts.append(f"<details><summary>{escape(m.name)}: the full table and its files"
                     f"</summary><pre>{escape(m.table)}</pre><p class=\"note\">Files: {files}"
                     f"</p></details>")
    curves = [m for m in s.models if m.plot]
    if curves:
        parts.append("<h3>Recall against IoU threshold</h3><div class=\"curves\">"
                     + "".join(f'<figure><img src="{escape(m.plot)}" alt="recall curves of '
                               f'{escape(m.name)}"><figcaption>{escape(m.name)}</figcaption>'
                               f"</figure>" for m in curves if m.plot)
                     + "</div>")
    for m in s.models:
        parts.append(_gallery(m, s.case_note))
    return "\n".join(parts)


def _scores_table(s: FamilySection) -> str:
    rows: list[str] = []
    for m in s.models:
        rows += [k for k in m.metrics if k not in rows]
    for p in s.papers:
        rows += [k for k in p.scores if k not in rows]
    head = ("<tr><th>score (%)</th>"
            + "".join(f"<th>{escape(m.name)}<br><small>ours, on synthetic val</small></th>"
                      for m in s.models)
            + "".join(f'<th class="paper">{escape(p.method)}<br><small>paper, on real data'
                      f"</small></th>" for p in s.papers) + "</tr>")
    body = []
    for key in rows:
        cells = "".join(f"<td>{_pct(m.metrics.get(key))}</td>" for m in s.models)
        cells += "".join(f'<td class="paper">{_number(p.scores.get(key))}</td>' for p in s.papers)
        body.append(f"<tr><td>{escape(metric_label(key))}</td>{cells}</tr>")
    notes = "".join(f"<li><b>{escape(p.method)}</b>: <i>{escape(p.paper)}</i>; "
                    f"{escape(p.data)}.</li>" for p in s.papers)
    caption = ("Ours: the checkpoints above, small models trained on the synthetic benchmark and "
               "scored on its val split. Paper: the published numbers of the full-size models on "
               "real images and language, shown for scale only; the two are <b>not comparable"
               "</b> (other images, other text, other model sizes).")
    return (f"<table>{head}{''.join(body)}</table>\n<p class=\"note\">{caption}</p>"
            + (f"<ul class=\"note\">{notes}</ul>" if notes else ""))


def gallery_page(title: str, name: str, entries: Sequence[GalleryEntry], scored: int, unit: str,
                 case_note: str) -> str:
    """A page of one gallery alone (``groundkit evaluate --gallery``): the pictures of
    ``entries`` (paths relative to the page), the worst first, each with its parts' IoUs."""
    return (f"<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>{escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
            f"<h1>{escape(title)}</h1>\n{gallery_html(name, entries, scored, unit, case_note)}\n"
            f"</body>\n</html>\n")


def _gallery(m: ModelReport, case_note: str) -> str:
    if m.scored is None:  # no gallery asked for
        return ""
    return gallery_html(m.name, m.gallery, m.scored, m.unit, case_note)


def gallery_html(name: str, entries: Sequence[GalleryEntry], scored: int, unit: str,
                 case_note: str) -> str:
    """The gallery of one model: a heading, a note and a figure per entry with its IoU table."""
    if not entries:
        return f"<h3>{escape(name)}: gallery</h3><p>No {escape(unit)} with a scored part.</p>"
    figures = []
    for rank, e in enumerate(entries, 1):
        rows = "".join(f"<tr><td>{escape(part)}</td><td style=\"background:{_shade(v)}\">"
                       f"{v:.2f}</td></tr>" for part, v in e.ious)
        figures.append(f'<figure><img src="{escape(e.picture)}" alt="{escape(e.label)}">'
                       f"<figcaption>#{rank}: {escape(e.label)}, mean IoU {e.mean_iou:.2f}"
                       f"<table><tr><th>part</th><th>IoU</th></tr>{rows}</table>"
                       f"</figcaption></figure>")
    return (f"<h3>{escape(name)}: the {len(entries)} worst of {scored} {escape(unit)}"
            f"</h3>\n<p class=\"note\">Ground truth (left) beside prediction (right), the lowest "
            f"mean IoU first; the IoUs are {escape(case_note)}.</p>\n"
            f"<div class=\"gallery\">{''.join(figures)}</div>")


def _pct(x: float | None) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}"


def _number(x: float | None) -> str:
    """A paper's number as printed there: one decimal, or two where it has two."""
    return "–" if x is None else f"{x:.1f}" if round(x, 1) == x else f"{x:.2f}"


def _shade(iou: float) -> str:
    """Red (0) through yellow to green (1), pale enough to read the number on."""
    return f"hsl({round(120 * min(max(iou, 0.0), 1.0))}, 70%, 85%)"
