"""``python -m hat.report RUN [RUN ...] [--latex | --csv]``: one benchmark table of finished test runs.

A run whose numbers are missing or unreadable is named on stderr in one line and left out.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

from hat.report import ReportError
from hat.report.runs import bicubic_run, load_run
from hat.report.tables import build_table, csv_table, latex, markdown


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog='python -m hat.report', description=(
        'Print a table of finished test runs (results/<name> folders written by hat/test.py): a row per run, '
        'PSNR/SSIM (and any other metric) per dataset, the best per column in bold. Markdown by default.'))
    parser.add_argument('runs', nargs='+', type=Path, metavar='RUN', help='results/<name> folder of a test run')
    form = parser.add_mutually_exclusive_group()
    form.add_argument('--latex', action='store_true', help='a LaTeX tabular (booktabs) for the paper')
    form.add_argument('--csv', action='store_true', help='CSV for a spreadsheet')
    parser.add_argument('--bicubic', action='store_true', help=(
        'add a first row "Bicubic": MATLAB-bicubic upscaling of the same LR inputs, scored with the same metrics '
        '(needs runs with per-image files and their ground-truth images in place)'))
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Print the table; 0 if at least one run was usable, 2 if none was."""
    args = parse_args(argv)
    runs = []
    for folder in args.runs:
        try:
            runs.append(load_run(folder))
        except ReportError as error:
            print(f'left out: {error}', file=sys.stderr)
    if not runs:
        print('hat.report: error: none of the runs has numbers to show', file=sys.stderr)
        return 2
    if args.bicubic:
        bicubic, problems = bicubic_run(runs)
        for problem in problems:
            print(problem, file=sys.stderr)
        runs.insert(0, bicubic)
    names = [run.name for run in runs]
    for run in runs:
        if names.count(run.name) > 1:
            run.name = str(run.folder)
    table = build_table(runs)
    sys.stdout.write(latex(table) if args.latex else csv_table(table) if args.csv else markdown(table))
    return 0


if __name__ == '__main__':
    sys.exit(main())
