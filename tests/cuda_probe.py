"""A pytest plugin for tests/test_cuda_marks.py: collects the suite as if ``torch.cuda.is_available()`` answered
``HAT_PROBE_CUDA`` (``1`` or ``0``) and writes, to the JSON file ``HAT_PROBE_OUT``, every collected test with
whether it carries the ``cuda`` mark and whether its skip marks skip it, and the tests left selected (``-m``)."""
from __future__ import annotations

import json
import os

import pytest
import torch

torch.cuda.is_available = lambda: os.environ['HAT_PROBE_CUDA'] == '1'  # before any test module is imported

_report: dict = {}


def _skip_state(item: pytest.Item) -> str:
    """'skipped', 'runs', or 'unknown' where a skipif condition is a string this probe does not evaluate."""
    if item.get_closest_marker('skip') is not None:
        return 'skipped'
    state = 'runs'
    for mark in item.iter_markers('skipif'):
        conditions = mark.args or (mark.kwargs.get('condition', True),)
        if any(isinstance(condition, str) for condition in conditions):
            state = 'unknown'
        elif any(conditions):
            return 'skipped'
    return state


@pytest.hookimpl(tryfirst=True)  # before ``-m`` deselects anything
def pytest_collection_modifyitems(items: list) -> None:
    _report['tests'] = {item.nodeid: {'cuda': item.get_closest_marker('cuda') is not None,
                                      'skip': _skip_state(item)} for item in items}


def pytest_collection_finish(session: pytest.Session) -> None:
    _report['selected'] = [item.nodeid for item in session.items]
    with open(os.environ['HAT_PROBE_OUT'], 'w', encoding='utf-8') as out:
        json.dump(_report, out)
