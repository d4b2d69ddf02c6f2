"""A finished test run's averages per dataset, from its per-image JSON files or, for older runs, its log."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from hat.report import ReportError
from hat.report.per_image import read_run

#: Metrics where lower is better (the rest, PSNR and SSIM among them, are better higher).
LOWER_IS_BETTER = ('niqe', 'lpips', 'dists', 'brisque', 'pi')

_VALIDATION = re.compile(r'Validation (\S+)\s*$')
_METRIC = re.compile(r'^\s*# (\w+): (\S+)')


@dataclass
class RunResults:
    """One run's averages: ``averages[dataset][metric]``, which metrics are better lower, the per-image records."""

    name: str
    folder: Path
    averages: dict[str, dict[str, float]]
    lower_is_better: set[str] = field(default_factory=set)
    records: dict[str, dict] = field(default_factory=dict)


def is_lower_better(metric: str, metric_type: str = '') -> bool:
    """True for metrics such as NIQE or LPIPS, judged by the metric's name or BasicSR type."""
    words = re.split(r'[^a-z]+', f'{metric} {metric_type}'.lower())
    return any(word in LOWER_IS_BETTER or word.removeprefix('calculate') in LOWER_IS_BETTER for word in words)


def read_log(path: Path) -> dict[str, dict[str, float]]:
    """dataset -> metric -> average from the ``Validation <dataset>`` blocks of a BasicSR test log."""
    found: dict[str, dict[str, float]] = {}
    current = None
    for line in path.read_text(encoding='utf-8', errors='replace').splitlines():
        header = _VALIDATION.search(line)
        metric = _METRIC.match(line)
        if header:
            current = found.setdefault(header[1], {})
        elif metric and current is not None:
            try:
                current[metric[1]] = float(metric[2])
            except ValueError:
                raise ReportError(f'{path}: {metric[1]} is {metric[2]!r}, not a number') from None
        elif line.strip() and not line.startswith((' ', '\t')):
            current = None
    return found


def load_run(folder: Path) -> RunResults:
    """Read the run in ``folder`` (``results/<name>``): its ``metrics_*.json`` files, else its newest test log."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ReportError(f'{folder} is not a folder')
    records = list(read_run(folder).values())
    if records:
        averages = {r['dataset']: {name: float(r['average'][name]) for name in r['metrics']} for r in records}
        lower = {name for r in records for name, opt in r['metrics'].items()
                 if is_lower_better(name, str((opt or {}).get('type', '')))}
    else:
        logs = sorted(folder.glob('test_*.log'))
        if not logs:
            raise ReportError(f'{folder} is not a test run (no metrics_*.json and no test_*.log)')
        averages = read_log(logs[-1])
        lower = {name for values in averages.values() for name in values if is_lower_better(name)}
    averages = {dataset: values for dataset, values in averages.items() if values}
    if not averages:
        raise ReportError(f'{folder} holds no metric values (was the test run with `val.metrics`, and did it finish?)')
    for dataset, values in averages.items():
        for name, value in values.items():
            if math.isnan(value):
                raise ReportError(f'{folder}: {dataset} {name} is not a number')
    return RunResults(folder.name, folder, averages, lower, {record['dataset']: record for record in records})


def bicubic_run(runs: list[RunResults]) -> tuple[RunResults, list[str]]:
    """The "Bicubic" row: each dataset scored from the first run with its per-image file; and what was left out."""
    from hat.report.bicubic import bicubic_averages

    averages, problems = {}, []
    for run in runs:
        for dataset, record in run.records.items():
            if dataset in averages:
                continue
            try:
                averages[dataset] = bicubic_averages(record, run.folder)
            except ReportError as error:
                problems.append(f'bicubic on {dataset} left out: {error}')
    lower = set().union(*(run.lower_is_better for run in runs))
    return RunResults('Bicubic', Path('.'), averages, lower), problems
