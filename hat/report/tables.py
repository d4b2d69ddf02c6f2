"""The benchmark table of several runs: a row per run, a column per (dataset, metric), best per column marked.

Datasets line up by name (the usual benchmarks first, in the order papers print them); a run without a
dataset gets an empty cell. PSNR is shown with 2 decimals, other metrics with 4; the best value of a
column (ties at the shown precision included) is bold where two or more runs have the column.
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass

from hat.report.runs import RunResults

#: The benchmarks' order in SR papers; other datasets follow in the order the runs name them.
BENCHMARK_ORDER = ('set5', 'set14', 'bsd100', 'b100', 'bsds100', 'urban100', 'manga109')
#: Metrics shown first, in this order.
METRIC_ORDER = ('psnr', 'ssim')


@dataclass
class Table:
    """Columns as (dataset, metric) and one row of cells per run; ``best`` holds the marked (row, column) cells."""

    runs: list[str]
    columns: list[tuple[str, str]]
    cells: list[list[str]]
    best: set[tuple[int, int]]

    def datasets(self) -> list[tuple[str, int]]:
        """Each dataset with its number of metric columns, in column order."""
        spans: dict[str, int] = {}
        for dataset, _ in self.columns:
            spans[dataset] = spans.get(dataset, 0) + 1
        return list(spans.items())


def decimals(metric: str) -> int:
    """Shown precision: 2 for PSNR (as papers print it), 4 for the rest."""
    return 2 if 'psnr' in metric.lower() else 4


def _ordered(names: list[str], first: tuple[str, ...]) -> list[str]:
    known = sorted((n for n in names if n.lower() in first), key=lambda n: first.index(n.lower()))
    return known + [n for n in names if n.lower() not in first]


def build_table(runs: list[RunResults]) -> Table:
    """Line the runs up by dataset and metric name and mark each column's best."""
    datasets = _ordered(list(dict.fromkeys(d for run in runs for d in run.averages)), BENCHMARK_ORDER)
    columns = []
    for dataset in datasets:
        metrics = list(dict.fromkeys(m for run in runs for m in run.averages.get(dataset, {})))
        columns += [(dataset, metric) for metric in _ordered(metrics, METRIC_ORDER)]
    values = [[run.averages.get(d, {}).get(m) for d, m in columns] for run in runs]
    cells = [['' if v is None else f'{v:.{decimals(m)}f}' for v, (_, m) in zip(row, columns)] for row in values]
    lower = set().union(*(run.lower_is_better for run in runs)) if runs else set()
    best = set()
    for j, (_, metric) in enumerate(columns):
        shown = [(float(cells[i][j]), i) for i in range(len(runs)) if cells[i][j]]
        if len(shown) < 2:
            continue
        target = (min if metric in lower else max)(value for value, _ in shown)
        best |= {(i, j) for value, i in shown if value == target}
    return Table([run.name for run in runs], columns, cells, best)


def _label(metric: str) -> str:
    return metric.upper() if metric.lower() in METRIC_ORDER else metric


def markdown(table: Table) -> str:
    """GitHub Markdown: ``| run | Set5 PSNR | Set5 SSIM | ...``, best values in bold."""
    head = ['run'] + [f'{dataset} {_label(metric)}' for dataset, metric in table.columns]
    lines = ['| ' + ' | '.join(head) + ' |', '| --- |' + ' ---: |' * len(table.columns)]
    for i, (run, row) in enumerate(zip(table.runs, table.cells)):
        cells = [f'**{c}**' if (i, j) in table.best else (c or '-') for j, c in enumerate(row)]
        lines.append('| ' + ' | '.join([_markdown_escape(run), *cells]) + ' |')
    return '\n'.join(lines) + '\n'


def _markdown_escape(text: str) -> str:
    return text.replace('|', r'\|').replace('*', r'\*').replace('_', r'\_')


def latex(table: Table) -> str:
    """A booktabs ``tabular``: a dataset per column group, best values in ``\\textbf``."""
    groups = table.datasets()
    spec = 'l' + ''.join(' ' + 'c' * span for _, span in groups)
    lines = [r'% needs \usepackage{booktabs}', rf'\begin{{tabular}}{{{spec}}}', r'\toprule']
    header, rules, start = [''], [], 2
    for dataset, span in groups:
        header.append(rf'\multicolumn{{{span}}}{{c}}{{{latex_escape(dataset)}}}')
        rules.append(rf'\cmidrule(lr){{{start}-{start + span - 1}}}')
        start += span
    lines += [' & '.join(header) + r' \\', ' '.join(rules)]
    lines.append(' & '.join(['Method'] + [latex_escape(_label(m)) for _, m in table.columns]) + r' \\')
    lines.append(r'\midrule')
    for i, (run, row) in enumerate(zip(table.runs, table.cells)):
        cells = [rf'\textbf{{{c}}}' if (i, j) in table.best else (c or '--') for j, c in enumerate(row)]
        lines.append(' & '.join([latex_escape(run), *cells]) + r' \\')
    lines += [r'\bottomrule', r'\end{tabular}']
    return '\n'.join(lines) + '\n'


_LATEX_SPECIALS = {'\\': r'\textbackslash{}', '&': r'\&', '%': r'\%', '$': r'\$', '#': r'\#', '_': r'\_',
                   '{': r'\{', '}': r'\}', '~': r'\textasciitilde{}', '^': r'\textasciicircum{}'}


def latex_escape(text: str) -> str:
    """``text`` with LaTeX's special characters escaped."""
    return ''.join(_LATEX_SPECIALS.get(c, c) for c in text)


def csv_table(table: Table) -> str:
    """CSV: ``run, Set5 PSNR, ...`` with the shown values (empty where a run lacks a dataset), no marks."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator='\n')
    writer.writerow(['run'] + [f'{dataset} {_label(metric)}' for dataset, metric in table.columns])
    for run, row in zip(table.runs, table.cells):
        writer.writerow([run, *row])
    return out.getvalue()
