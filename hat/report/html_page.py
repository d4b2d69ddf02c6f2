"""``index.html`` of a test run: averages, per-image rows sortable by metric, thumbnails, SR-vs-GT slider.

One self-contained file (inline CSS and a few lines of inline JavaScript, nothing fetched) whose links
are relative: to the run's saved images, to thumbnails it writes under ``thumbs/``, and to the dataset's
ground-truth files (so they resolve while the results folder sits where the test wrote it).
"""
from __future__ import annotations

import html
import io
from pathlib import Path
from urllib.parse import quote

from PIL import Image

from hat.report.per_image import read_run
from hat.weights.atomic_io import atomic_write_text, write_bytes_atomic

#: Longest side of a thumbnail in pixels.
THUMB_SIDE = 128

STYLE = """
body{font-family:sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;margin-bottom:1.5em}
th,td{border:1px solid #ccc;padding:3px 8px;text-align:right;vertical-align:top}
th[data-col]{cursor:pointer;background:#f2f2f2}
td.name,th.name{text-align:left}
.cmp{position:relative;max-width:90vw}
.cmp img{position:absolute;top:0;left:0;width:100%;height:100%;image-rendering:pixelated}
.cmp img.sr{clip-path:inset(0 50% 0 0)}
"""

SCRIPT = """
document.querySelectorAll('th[data-col]').forEach(th => th.addEventListener('click', () => {
  const body = th.closest('table').tBodies[0], col = +th.dataset.col, up = th.dataset.dir !== 'up';
  th.dataset.dir = up ? 'up' : 'down';
  const key = r => {
    const c = r.cells[col];
    return 'value' in c.dataset ? parseFloat(c.dataset.value) : c.textContent;
  };
  [...body.rows].sort((a, b) => { const x = key(a), y = key(b); return (x < y ? -1 : x > y ? 1 : 0) * (up ? 1 : -1); })
    .forEach(r => body.appendChild(r));
}));
document.addEventListener('input', e => {
  if (!e.target.classList.contains('slide')) return;
  e.target.parentElement.querySelector('img.sr').style.clipPath = `inset(0 ${100 - e.target.value}% 0 0)`;
});
"""


def link(path: str) -> str:
    """A relative file path as an attribute value: URL-quoted, then HTML-escaped."""
    return html.escape(quote(path), quote=True)


def write_thumbnail(folder: Path, source: str, target: str) -> bool:
    """Write a JPEG thumbnail of ``folder/source`` to ``folder/target`` unless one newer than the source is there
    (the page is rewritten after each dataset); False if the source is unreadable."""
    try:
        if (folder / target).stat().st_mtime >= (folder / source).stat().st_mtime:
            return True
    except OSError:
        pass
    try:
        with Image.open(folder / source) as image:
            image = image.convert('RGB')
            image.thumbnail((THUMB_SIDE, THUMB_SIDE))
    except OSError:
        return False
    data = io.BytesIO()
    image.save(data, format='JPEG', quality=85)
    write_bytes_atomic(folder / target, data.getvalue(), overwrite=True)
    return True


def averages_table(records: list[dict]) -> str:
    """A dataset per row, a metric per column: the averages BasicSR logged."""
    names = list(dict.fromkeys(name for record in records for name in record['metrics']))
    head = ''.join(f'<th>{html.escape(name)}</th>' for name in names)
    rows = []
    for record in records:
        cells = ''.join(f'<td>{record["average"][n]:.4f}</td>' if n in record['average'] else '<td></td>'
                        for n in names)
        rows.append(f'<tr><td class="name"><a href="#{link(record["dataset"])}">{html.escape(record["dataset"])}'
                    f'</a></td><td>{len(record["images"])}</td>{cells}</tr>')
    return (f'<table><thead><tr><th class="name">dataset</th><th>images</th>{head}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table>')


def comparison(row: dict, folder: Path) -> str:
    """SR over the ground truth (or the LR image, scaled by the browser) with a slider; empty without SR."""
    reference, label = row.get('gt_path'), 'GT'
    if not reference or not (folder / reference).is_file():
        reference, label = row.get('lq_path'), 'LR (browser-scaled)'
    if not row.get('sr_path') or not reference or not (folder / reference).is_file():
        return ''
    return (f'<details><summary>SR | {label}</summary>'
            f'<div class="cmp" style="width:{row["width"]}px;aspect-ratio:{row["width"]}/{row["height"]}">'
            f'<img src="{link(reference)}" alt="{label}" loading="lazy">'
            f'<img class="sr" src="{link(row["sr_path"])}" alt="SR" loading="lazy"></div>'
            f'<input class="slide" type="range" min="0" max="100" value="50" aria-label="SR share"></details>')


def dataset_section(record: dict, folder: Path, stem: str) -> str:
    """The dataset's heading, links to its CSV/JSON and its per-image table (thumbnails written on the way)."""
    names = list(record['metrics'])
    head = ''.join(f'<th data-col="{i + 3}">{html.escape(name)}</th>' for i, name in enumerate(names))
    rows = []
    for row in record['images']:
        thumb = ''
        if row.get('sr_path'):
            target = f'thumbs/{stem}/{row["image"]}.jpg'
            if write_thumbnail(folder, row['sr_path'], target):
                alt = html.escape(row['image'], quote=True)
                thumb = f'<a href="{link(row["sr_path"])}"><img src="{link(target)}" alt="{alt}"></a>'
        cells = ''.join(f'<td data-value="{row[n]!r}">{row[n]:.4f}</td>' for n in names)
        rows.append(f'<tr data-image="{html.escape(row["image"], quote=True)}"><td>{thumb}</td>'
                    f'<td class="name">{html.escape(row["image"])}</td><td>{row["width"]}x{row["height"]}</td>'
                    f'{cells}<td class="name">{comparison(row, folder)}</td></tr>')
    note = '' if any(row.get('sr_path') for row in record['images']) else \
        '<p>The SR images were not saved (set <code>val.save_img: true</code> to see them here).</p>'
    dataset = html.escape(record['dataset'])
    return (f'<h2 id="{html.escape(record["dataset"], quote=True)}">{dataset}</h2>'
            f'<p>{len(record["images"])} images; per-image numbers as <a href="{link(stem + ".csv")}">CSV</a> '
            f'and <a href="{link(stem + ".json")}">JSON</a>. Click a column heading to sort.</p>{note}'
            f'<table><thead><tr><th>SR</th><th class="name" data-col="1">image</th><th>size</th>{head}'
            f'<th class="name">compare</th></tr></thead><tbody>{"".join(rows)}</tbody></table>')


def write_index(folder: Path) -> Path:
    """(Re)write ``folder/index.html`` from the run's per-image JSON files; returns its path."""
    folder = Path(folder)
    found = read_run(folder)
    records = list(found.values())
    run = html.escape(str(records[0].get('run') or folder.name)) if records else html.escape(folder.name)
    sections = ''.join(dataset_section(record, folder, path.stem) for path, record in found.items())
    page = (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{run}: results</title>'
            f'<style>{STYLE}</style></head><body><h1>{run}</h1>{averages_table(records)}{sections}'
            f'<script>{SCRIPT}</script></body></html>\n')
    target = folder / 'index.html'
    atomic_write_text(target, page, overwrite=True)
    return target
