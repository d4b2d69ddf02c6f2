"""Results for a paper from finished test runs: per-image metrics, benchmark tables, comparison figures, HTML pages.

``python -m hat.report RUN ...`` prints the table, ``python -m hat.report.figure`` draws the zoomed-crop
figure; ``hat/test.py`` writes each run's per-image files and ``index.html`` (see docs/results.md).
"""


class ReportError(ValueError):
    """Input the report tools cannot use; the message names the problem and what to do."""
