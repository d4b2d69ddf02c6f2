"""Command-line tools for preparing training data (run them with ``python -m hat.scripts.<name>``)."""
