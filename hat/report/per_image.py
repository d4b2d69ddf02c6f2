"""The per-image metrics files of a test or validation run: ``metrics_<dataset>.csv`` and ``.json``.

The JSON file holds everything the report tools read (the dataset, the metric options, every image's
numbers and file paths, the averages as BasicSR logs them); the CSV file holds the same numbers for a
spreadsheet, one row per image and a last row ``(average)``.
"""
from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

from hat.report import ReportError
from hat.weights.atomic_io import atomic_write_text

#: Name of the CSV row that holds the averages.
AVERAGE_ROW = '(average)'
#: Per-image JSON files of a run folder: ``metrics_<dataset>.json``.
JSON_GLOB = 'metrics_*.json'


def file_stem(dataset: str, current_iter: Any = None) -> str:
    """``metrics_<dataset>`` (``_<iter>`` appended for validation while training), safe as a file name."""
    safe = ''.join(c if c.isalnum() or c in '-_.+' else '_' for c in str(dataset))
    return f'metrics_{safe}' if current_iter is None else f'metrics_{safe}_{current_iter}'


def averages(rows: list[dict], metric_names: list[str]) -> dict[str, float]:
    """Each metric's mean over ``rows``, summed in order from 0 and divided by the count, as BasicSR does."""
    return {name: sum((row[name] for row in rows), 0) / len(rows) for name in metric_names}


def csv_text(record: dict) -> str:
    """The CSV form of ``record``: image, width, height, one column per metric, then the average row."""
    names = list(record['metrics'])
    out = io.StringIO()
    writer = csv.writer(out, lineterminator='\n')
    writer.writerow(['image', 'width', 'height', *names])
    for row in record['images']:
        writer.writerow([row['image'], row['width'], row['height'], *(repr(row[name]) for name in names)])
    writer.writerow([AVERAGE_ROW, '', '', *(repr(record['average'][name]) for name in names)])
    return out.getvalue()


def write_per_image(folder: Path, stem: str, record: dict, overwrite: bool) -> tuple[Path, Path]:
    """Write ``<stem>.csv`` then ``<stem>.json`` into ``folder``, each atomically; returns both paths.

    The JSON file goes last: a run whose JSON file is there has its CSV file too.
    """
    csv_path, json_path = folder / f'{stem}.csv', folder / f'{stem}.json'
    atomic_write_text(csv_path, csv_text(record), overwrite)
    atomic_write_text(json_path, json.dumps(record, indent=1, allow_nan=True) + '\n', overwrite)
    return csv_path, json_path


def read_run(folder: Path) -> dict[Path, dict]:
    """Every per-image JSON file of a run's results folder, by path in sorted order."""
    return {path: read_per_image(path) for path in sorted(Path(folder).glob(JSON_GLOB))}


def read_per_image(path: Path) -> dict:
    """A per-image JSON file, checked for the keys and numbers the report tools use."""
    try:
        record = json.loads(Path(path).read_text(encoding='utf-8'))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ReportError(f'{path} is not readable per-image metrics ({error})') from None
    if not isinstance(record, dict) or not {'dataset', 'metrics', 'average', 'images'} <= set(record):
        raise ReportError(f'{path} lacks the dataset, metrics, average or images of a per-image metrics file')
    for name in record['metrics']:
        value = record['average'].get(name)
        if not isinstance(value, (int, float)) or math.isnan(value):
            raise ReportError(f'{path}: the average {name} is {value!r}, not a number')
    return record
