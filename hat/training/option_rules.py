"""The option file's keys as one table of rules (key, kind, bounds, required, the fix to print), and its engine.

Keys are dotted, a segment may be a glob (``datasets.*.type``); the first rule that reaches a key
decides it, so a specific rule before a glob overrides it. Rules look only inside mappings: a
malformed section is its own rule's problem. What a table cannot say is in :mod:`hat.training.preflight`.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any, Iterator, Optional, Union

from hat.problems import Problem

#: BasicSR's learning-rate schedulers by option name (``SRModel.setup_schedulers``).
SCHEDULERS = {'MultiStepLR': 'MultiStepRestartLR', 'MultiStepRestartLR': 'MultiStepRestartLR',
              'CosineAnnealingRestartLR': 'CosineAnnealingRestartLR'}

#: Keys whose values are text even when they look like numbers (names, paths, templates).
TEXT_KEYS = re.compile(r'name|root|path|file|type|tmpl|suffix|pretrain|resume|project|param_key|backend|mode')

#: BasicSR registries by what their classes are, for rules of kind ``class``.
REGISTRIES = {'model': 'MODEL_REGISTRY', 'dataset': 'DATASET_REGISTRY', 'network': 'ARCH_REGISTRY',
              'loss': 'LOSS_REGISTRY', 'metric': 'METRIC_REGISTRY'}


@dataclass(frozen=True)
class Rule:
    """What the value at ``key`` must be: a ``section`` (mapping), ``count`` (whole number, ``5e3`` included),
    ``int``, ``number`` (``low`` < x < ``high``), ``bool``, ``choice``, ``text`` (non-empty) or ``class`` (registered
    in BasicSR's ``what`` registry); ``also``: values accepted besides. ``required``: True or the phase that needs it;
    ``when``: the only phase it applies to. ``fix`` ends a wrong value's line (``expected``: the phrase after the value,
    "is not ..." by default) and ``missing`` a missing one's.
    """

    key: str
    kind: str
    fix: str = ''
    required: Union[bool, str] = False
    low: Optional[float] = None
    high: Optional[float] = None
    also: tuple = ()
    choices: tuple = ()
    what: str = ''
    missing: str = ''
    expected: str = ''
    when: Optional[str] = None


RULES = (
    Rule('num_gpu', 'int', low=0, also=('auto',), required=True, expected='is neither a number of GPUs nor auto',
         fix='write `num_gpu: auto` or `num_gpu: 0` for the CPU',
         missing='add `num_gpu: auto` (every visible GPU, else the CPU) or `num_gpu: 0` (CPU)'),
    Rule('name', 'text', required=True, expected='is not a name',
         fix='add `name: <experiment name>`, the folder under experiments/ (training) or results/ (testing)'),
    Rule('model_type', 'class', what='model', required=True, missing='add `model_type: HATModel`'),
    Rule('scale', 'int', low=1, required=True, fix='write e.g. `scale: 4`',
         missing='add the upscaling factor, e.g. `scale: 4`'),
    Rule('manual_seed', 'int', fix='write e.g. `manual_seed: 0`'),
    Rule('tile', 'section', fix='write `tile: {tile_size: 256, tile_pad: 32}` or remove it'),
    Rule('tile.tile_size', 'count', low=1, required=True, fix='add e.g. `tile_size: 256`'),
    Rule('tile.tile_pad', 'count', low=0),
    Rule('datasets', 'section', required=True,
         fix='add a `datasets:` section (`train:` and `val:` for training, `test_1:` ... for testing)'),
    Rule('datasets.train', 'section', required=True, when='train', expected='is not a dataset section',
         fix='write its `name`, `type`, data paths and `io_backend`', missing='training needs a `train:` dataset'),
    Rule('datasets.*', 'section', required=True, expected='is not a dataset section',
         fix='write its `name`, `type`, data paths and `io_backend`'),
    Rule('datasets.*.type', 'class', what='dataset', required=True),
    Rule('datasets.*.name', 'text', required=True, fix='add `name: <dataset name>` (used in logs and result folders)'),
    Rule('datasets.*.io_backend', 'section', required=True, fix='add `io_backend: {type: disk}`'),
    Rule('datasets.*.io_backend.type', 'choice', choices=('disk', 'lmdb', 'memcached'), required=True,
         fix='write `type: disk` (folders) or `type: lmdb`'),
    Rule('datasets.train.batch_size_per_gpu', 'count', low=1, required=True, fix='write a whole number such as 4'),
    Rule('datasets.train.num_worker_per_gpu', 'count', low=0),
    Rule('datasets.train.gt_size', 'count', low=1),
    Rule('datasets.train.dataset_enlarge_ratio', 'number', low=0),
    *(Rule(f'datasets.train.{flag}', 'bool') for flag in ('use_hflip', 'use_rot', 'use_shuffle')),
    Rule('datasets.train.prefetch_mode', 'choice', choices=('cpu', 'cuda'), expected='is not ~, cpu or cuda',
         fix='write `prefetch_mode: ~`'),
    Rule('network_g', 'section', required=True, fix='write the network section (`type: HAT`, ...)',
         missing='add the network section (`type: HAT`, `upscale: <scale>`, ... as in options/train/HAT_SRx4.yml)'),
    Rule('network_*', 'section', required=True, fix='write the network section (`type: HAT`, ...)'),
    Rule('network_*.type', 'class', what='network', required=True),
    Rule('path', 'section', required=True, fix='add a `path:` section (`pretrain_network_g: ~` to train from scratch)'),
    Rule('path.strict_load_*', 'bool'),
    Rule('train', 'section', required=True, when='train',
         fix='add the `train:` section (optim_g, scheduler, total_iter, pixel_opt)'),
    Rule('train.total_iter', 'count', low=1, required=True, when='train',
         fix='write the number of iterations, e.g. `total_iter: 500000`'),
    Rule('train.warmup_iter', 'count', when='train', fix='write -1 for no warm-up'),
    Rule('train.ema_decay', 'number', low=0, high=1, also=(0,), when='train', fix='write e.g. 0.999, or 0 for no EMA'),
    Rule('train.optim_g', 'section', required=True, when='train', fix='write `{type: Adam, lr: 2.0e-4}`',
         missing='add e.g. `optim_g: {type: Adam, lr: 2.0e-4, betas: [0.9, 0.99]}`'),
    Rule('train.optim_*', 'section', required=True, when='train', fix='write `{type: Adam, lr: 2.0e-4}`'),
    Rule('train.optim_*.lr', 'number', low=0, required=True, when='train', fix='write the learning rate, e.g. 2.0e-4'),
    Rule('train.scheduler', 'section', required=True, when='train',
         fix='add e.g. `scheduler: {type: MultiStepLR, milestones: [250000, 400000], gamma: 0.5}`'),
    Rule('train.scheduler.type', 'choice', choices=tuple(sorted(SCHEDULERS)), required=True, when='train',
         fix='write `type: MultiStepLR`'),
    Rule('train.*_opt', 'section', when='train', fix='write `{type: L1Loss, loss_weight: 1.0}`'),
    Rule('train.*_opt.type', 'class', what='loss', required=True, when='train'),
    Rule('train.*_opt.loss_weight', 'number', low=-float('inf'), when='train'),
    Rule('logger', 'section', required=True, when='train',
         fix='add `logger: {print_freq: 100, save_checkpoint_freq: 5000, use_tb_logger: false}`'),
    Rule('logger.print_freq', 'count', low=1, required=True, when='train', fix='write e.g. 100'),
    Rule('logger.save_checkpoint_freq', 'count', low=1, required=True, when='train', fix='write e.g. 5000'),
    Rule('logger.use_tb_logger', 'bool', when='train'),
    Rule('val', 'section', required='test', fix='add `val: {save_img: true}` (and `metrics:` to score PSNR/SSIM)'),
    Rule('val.val_freq', 'count', low=1, required='train', when='train', fix='write e.g. `val_freq: 5000`'),
    Rule('val.save_img', 'bool'),
    Rule('val.tb_images', 'count', low=0, fix='write how many validation images TensorBoard shows, 0 for none'),
    Rule('val.metrics', 'section', fix='write `metrics: {psnr: {type: calculate_psnr, crop_border: 4}}` or remove it'),
    Rule('val.metrics.*', 'section', required=True, expected='is not a metric section',
         fix='write `{type: calculate_psnr, crop_border: 4}`'),
    Rule('val.metrics.*.type', 'class', what='metric', required=True),
    Rule('val.metrics.*.crop_border', 'count', low=0),
    Rule('val.metrics.*.test_y_channel', 'bool'),
)


def show(value: Any) -> str:
    """A value as a problem line quotes it: strings with quotes, everything else as YAML would write it."""
    return repr(value) if isinstance(value, str) else str(value)


def number_text(value: Any) -> bool:
    """A string that reads as a number: what YAML makes of ``2e-4`` (no dot) or a quoted number."""
    if not isinstance(value, str):
        return False
    try:
        float(value)
    except ValueError:
        return False
    return value.strip().lower() not in ('nan', 'inf', '-inf', '+inf', 'infinity')


def is_number(value: Any) -> bool:
    """An int or float that is not a bool (YAML's true is not a count)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def registry(what: str) -> Any:
    """BasicSR's registry of ``what`` (model, dataset, network, loss, metric)."""
    import basicsr.utils.registry

    return getattr(basicsr.utils.registry, REGISTRIES[what])


def lookup(what: str, name: Any) -> Any:
    """The class registered as ``name`` (BasicSR files its own under ``<name>_basicsr`` too), or None."""
    found = registry(what)
    if not isinstance(name, str):
        return None
    return next((found.get(key) for key in (name, f'{name}_basicsr') if key in found), None)


def numbers_as_text(value: Any, key: str = '') -> Iterator[Problem]:
    """Strings that read as numbers anywhere except under names and paths (``lr: 2e-4`` is text to YAML 1.1)."""
    if isinstance(value, (dict, list)):
        for k, v in value.items() if isinstance(value, dict) else enumerate(value):
            if isinstance(value, list) or not TEXT_KEYS.search(str(k)):
                yield from numbers_as_text(v, f'{key}[{k}]' if isinstance(value, list) else f'{key}.{k}'.lstrip('.'))
    elif number_text(value):
        mantissa, _, exponent = value.strip().lower().partition('e')
        written = f'{mantissa}.0e{exponent}' if exponent and '.' not in mantissa else value.strip()
        yield Problem(key, f'{value!r} is text, not a number (YAML reads a float only with a dot, or a quoted number '
                           f'as text); write {written}')


def _fits(rule: Rule, value: Any) -> bool:
    """Whether a given ``value`` is what a rule of kind section, bool, choice, count, int or number asks for."""
    if rule.kind in ('section', 'bool', 'choice'):
        return isinstance(value, dict) if rule.kind == 'section' else (
            isinstance(value, bool) if rule.kind == 'bool' else value in rule.choices)
    if not is_number(value):
        return False
    if rule.kind == 'number':
        return value > rule.low and (rule.high is None or value < rule.high)
    whole = float(value).is_integer() if rule.kind == 'count' else isinstance(value, int)
    return whole and (rule.low is None or value >= rule.low)


def verdict(rule: Rule, value: Any, required: bool) -> Optional[str]:
    """What is wrong with ``value`` under ``rule`` (None: nothing, or already reported as a number written as text)."""
    name_it = rule.what and (f"name the {rule.what} (a class registered in BasicSR's {registry(rule.what)._name} "
                             'registry)')
    if value is None:
        return f'missing; {rule.missing or rule.fix or name_it}' if required else None
    if rule.kind in ('class', 'text'):
        if not isinstance(value, str) or not value.strip():
            return ' '.join(filter(None, (show(value), rule.expected))) + f'; {rule.fix or name_it}'
        if rule.kind == 'text' or lookup(rule.what, value) is not None:
            return None
        known = sorted(k for k, _ in registry(rule.what) if not k.endswith('_basicsr'))  # a Registry iterates items
        return f'{value!r} is not a known {rule.what}; use one of {known}'
    if value in rule.also or _fits(rule, value) or (
            rule.kind in ('section', 'count', 'int', 'number') and number_text(value)):
        return None
    expected = rule.expected or 'is not ' + {
        'section': 'a section of options', 'bool': 'true or false', 'choice': f'one of {list(rule.choices)}',
        'number': f'a number above {rule.low}' + (f' and below {rule.high}' if rule.high is not None else ''),
    }.get(rule.kind, 'a whole number' + (f' >= {rule.low}' if rule.low is not None else ''))
    fix = rule.fix or {'count': f'write a whole number such as {max(rule.low or 0, 1) * 4}',
                       'number': 'fix the value', 'bool': 'write true or false (unquoted)'}[rule.kind]
    return f'{show(value)} {expected}; {fix}'


def _sections(opt: dict, segments: list[str]) -> Iterator[tuple[list[str], dict]]:
    """(key path, mapping) of every section that ``segments`` (globs allowed) reach in ``opt``."""
    found = [([], opt)]
    for segment in segments:
        found = [(where + [str(name)], value) for where, section in found for name, value in section.items()
                 if fnmatchcase(str(name), segment) and isinstance(value, dict)]
    return iter(found)


def rule_problems(opt: dict, is_train: bool) -> list[Problem]:
    """Every problem the table finds in ``opt`` (numbers written as text first), one per key."""
    phase = 'train' if is_train else 'test'
    problems, decided = list(numbers_as_text(opt)), set()
    for rule in RULES:
        if rule.when not in (None, phase):
            continue
        *parents, last = rule.key.split('.')
        for where, section in _sections(opt, parents):
            names = [n for n in section if fnmatchcase(str(n), last)] if set(last) & set('*?[') else [last]
            for name in names:
                key = '.'.join(where + [str(name)])
                if key in decided:
                    continue
                decided.add(key)
                text = verdict(rule, section.get(name), rule.required in (True, phase))
                if text:
                    problems.append(Problem(key, text))
    return problems
