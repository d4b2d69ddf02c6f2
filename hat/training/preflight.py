"""Pre-flight validation of an option file, before BasicSR creates, archives or writes anything.

BasicSR reads most options only when it needs them, so a mistake (``lr: 2e-4``, ``num_gpu: 1`` without a GPU)
would stop a run after it has moved the previous experiment folder aside. :func:`check` reports every problem
first, one line each: the table of :mod:`hat.training.option_rules`, then the domain checks below.
"""
from __future__ import annotations

import importlib.util
import inspect
import os
import sys
from typing import Any, Iterable, Iterator, Optional, Union

from hat.problems import Problem, ProblemsError
from hat.training.option_rules import SCHEDULERS, Rule, is_number, lookup, number_text, rule_problems, show, verdict


class OptionError(ProblemsError):
    """Problems that make an option file unusable, one line each (a bare string: a problem of the whole file)."""

    def __init__(self, source: str, problems: Iterable[Union[Problem, str]]) -> None:
        problems = [p if isinstance(p, Problem) else Problem('', p) for p in problems]
        count = f'{len(problems)} problem{"s" if len(problems) != 1 else ""}'
        super().__init__(problems, f'{source}: {count}, nothing was written:\n' + '\n'.join(f'  {p}' for p in problems))
        self.source = source


def _name(opt: dict) -> Iterator[Problem]:
    """``name`` is a plain folder name (the experiment's or the results' folder), not a path."""
    name = opt.get('name')
    if isinstance(name, str) and ('/' in name or os.sep in name or name in ('.', '..')):
        yield Problem('name', f'{name!r} is a path, not a folder name; use a plain name without "/"')


def _devices(opt: dict) -> Iterator[Problem]:
    """``num_gpu`` and the CUDA prefetcher against the GPUs this machine has."""
    import torch

    value, datasets = opt.get('num_gpu'), opt.get('datasets')
    if type(value) is not int or value < 0:
        return  # 'auto', or reported by the rules
    if value > 0 and not torch.cuda.is_available():
        yield Problem('num_gpu', f'{value} asks for {"a GPU" if value == 1 else f"{value} GPUs"}, but CUDA is not '
                                 f'available here (torch {torch.__version__}); set `num_gpu: 0` to run on the CPU, or '
                                 '`num_gpu: auto` (the GPUs if there are any, else the CPU)')
    for phase, ds in datasets.items() if isinstance(datasets, dict) else ():
        if isinstance(ds, dict) and ds.get('prefetch_mode') == 'cuda' and (value == 0 or not torch.cuda.is_available()):
            yield Problem(f'datasets.{phase}.prefetch_mode', "'cuda' needs a GPU; write `prefetch_mode: ~` (or cpu)")


def _phases(opt: dict, is_train: bool) -> Iterator[Problem]:
    """At least one dataset; training knows only ``train`` and ``val...`` phases."""
    datasets = opt.get('datasets')
    if datasets == {}:
        yield Problem('datasets', 'is empty; add at least one dataset')
    for phase in datasets if is_train and isinstance(datasets, dict) else ():
        if phase != 'train' and not str(phase).startswith('val'):
            yield Problem(f'datasets.{phase}', f'{phase!r} is not a phase BasicSR trains with; name it `train` or '
                                               '`val...`')


def _options_of(key: str, name: str, cls: type, kwargs: dict) -> Iterator[Problem]:
    """Keys of a network section that ``cls``'s constructor does not take, and flags that are not true or false."""
    params = inspect.signature(cls).parameters
    open_ended = any(p.kind is p.VAR_KEYWORD for p in params.values())
    for option, value in kwargs.items():
        if option not in params and not open_ended:
            yield Problem(f'{key}.{option}', f'{show(value)} is not an option of {name}; remove it or fix its spelling')
        elif option in params and isinstance(params[option].default, bool) and (
                text := verdict(Rule(option, 'bool'), value, False)):
            yield Problem(f'{key}.{option}', text)


def _networks(opt: dict) -> tuple[dict[str, Any], list[Problem]]:
    """Every ``network_*`` section builds; returns the built networks by label, and the problems."""
    import torch

    built, problems = {}, []
    for key, section in opt.items():
        if not str(key).startswith('network_') or not isinstance(section, dict):
            continue
        cls = lookup('network', section.get('type'))
        kwargs = {k: v for k, v in section.items() if k != 'type'}
        if cls is None or any(number_text(v) for v in kwargs.values()):
            continue  # reported by the rules; building would only repeat it less clearly
        wrong = list(_options_of(key, section['type'], cls, kwargs))
        problems += wrong
        try:
            if not wrong:
                with torch.random.fork_rng(devices=[]), torch.no_grad():
                    built[key[len('network_'):]] = cls(**kwargs)
        except (TypeError, ValueError, AssertionError, KeyError, RuntimeError, ZeroDivisionError) as error:
            problems.append(Problem(key, f'{section["type"]} cannot be built from these options: {error}'))
    scale, section = opt.get('scale'), opt['network_g'] if isinstance(opt.get('network_g'), dict) else {}
    upscale = getattr(built.get('g'), 'upscale', section.get('upscale'))
    if isinstance(scale, int) and isinstance(upscale, int) and scale != upscale:
        problems.append(Problem('network_g.upscale', f'{upscale} differs from scale: {scale}; a network that upscales '
                                                     f'x{upscale} cannot train or test at x{scale}: make them equal'))
    return built, problems


def _pretrained(opt: dict, is_train: bool, built: dict[str, Any]) -> Iterator[Problem]:
    """``path.pretrain_network_*`` exists, reads with ``weights_only=True`` and fits its network."""
    path = opt.get('path')
    if not isinstance(path, dict):
        return
    resumed: set[str] = set()
    if is_train:
        from hat.training.resume import check_resume

        problems: list[Problem] = []
        resumed = check_resume(opt, built, lambda key, text: problems.append(Problem(key, text)),
                               lambda *fit: problems.extend(_fit(*fit)))
        yield from problems
    for key, file in path.items():
        label = str(key)[len('pretrain_network_'):]
        if not str(key).startswith('pretrain_network_') or not file or label in resumed:
            continue
        if not os.path.isfile(str(file)):
            yield Problem(f'path.{key}', f'{str(file)!r} does not exist; fix the path (train the stage it comes from '
                                         'first) or write `~` to start from random weights')
        elif label in built:
            yield from _fit(built[label], str(file), label, path.get(f'param_key_{label}', 'params'),
                            path.get(f'strict_load_{label}', True) is not False)


def _fit(net: Any, file: str, label: str, param_key: Optional[str], strict: bool) -> Iterator[Problem]:
    """Load ``file`` into ``net`` as the model will (``param_key`` falling back like BasicSR)."""
    from hat.archs.hat_arch import HAT
    from hat.weights.checkpoint import CheckpointError, infer_config, load_weights, read_network

    key = f'path.pretrain_network_{label}'
    try:
        state_dict = read_network(file, param_key).state_dict
    except (CheckpointError, OSError) as error:
        yield Problem(key, f'{error}')
        return
    if not strict:
        return  # BasicSR skips missing, unexpected and differently shaped keys (and logs them)
    try:
        load_weights(net, state_dict) if isinstance(net, HAT) else net.load_state_dict(state_dict, strict=True)
    except (CheckpointError, RuntimeError) as error:
        try:
            their_scale = infer_config(state_dict)['upscale'] if isinstance(net, HAT) else None
        except CheckpointError:
            their_scale = None
        if their_scale is not None and their_scale != net.upscale:
            yield Problem(key, f'{file!r} holds a x{their_scale} network, network_{label} is x{net.upscale}, and '
                               f'strict_load_{label}: true cannot load it; set `strict_load_{label}: false` to '
                               f'fine-tune across scales (the layers x{net.upscale} adds start from random weights)')
        else:
            yield Problem(key, f'{file!r} does not fit network_{label}: {error}')


def _training(opt: dict) -> Iterator[Problem]:
    """The optimizers and the scheduler accept their options, a loss is set, the switches and network format."""
    import torch
    from basicsr.models import lr_scheduler

    from hat.models.train_switches import TrainSwitches
    from hat.weights.checkpoint import network_format

    train = opt.get('train')
    if not isinstance(train, dict):
        return
    model_cls = lookup('model', opt.get('model_type'))
    for name, section in train.items():
        if not (str(name).startswith('optim_') and isinstance(section, dict) and model_cls is not None and
                is_number(section.get('lr')) and section['lr'] > 0 and not any(map(number_text, section.values()))):
            continue
        try:
            model_cls.get_optimizer(None, section.get('type'), [torch.nn.Parameter(torch.zeros(1))],
                                    **{k: v for k, v in section.items() if k != 'type'})
        except NotImplementedError:
            yield Problem(f'train.{name}.type', f'{show(section.get("type"))} is not an optimizer '
                                                f'{model_cls.__name__} supports; write `type: Adam`')
        except (TypeError, ValueError) as error:
            yield Problem(f'train.{name}', f'the optimizer does not accept these options: {error}')
    scheduler = train.get('scheduler')
    if isinstance(scheduler, dict) and scheduler.get('type') in SCHEDULERS and not any(map(number_text,
                                                                                             scheduler.values())):
        kind, kwargs = scheduler['type'], {k: v for k, v in scheduler.items() if k != 'type'}
        optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        try:
            getattr(lr_scheduler, SCHEDULERS[kind])(optimizer, **kwargs)
        except (TypeError, ValueError, AssertionError) as error:
            yield Problem('train.scheduler', f'{kind} does not accept these options: {error}')
    if not any(str(k).endswith('_opt') and v is not None for k, v in train.items()):
        yield Problem('train.pixel_opt', 'missing, and no other loss is set; add e.g. `pixel_opt: {type: L1Loss, '
                                         'loss_weight: 1.0, reduction: mean}`')
    for check in (TrainSwitches.from_options, network_format):  # run-time validators: their problems, unparsed
        try:
            check(opt if isinstance(opt.get('path'), dict) else {**opt, 'path': {}})
        except ProblemsError as error:
            yield from error.problems


def _packages(opt: dict) -> Iterator[Problem]:
    """The logger's TensorBoard and wandb are installed when asked for (debug runs use neither)."""
    logger, name = opt.get('logger'), str(opt.get('name'))
    if not isinstance(logger, dict) or 'debug' in name:
        return
    if logger.get('use_tb_logger') is True and importlib.util.find_spec('tensorboard') is None:
        yield Problem('logger.use_tb_logger', 'true, but the tensorboard package is not installed; '
                                              '`pip install tensorboard` or write `use_tb_logger: false`')
    wandb = logger.get('wandb')
    if isinstance(wandb, dict) and wandb.get('project') and importlib.util.find_spec('wandb') is None:
        yield Problem('logger.wandb.project', f'{wandb["project"]!r} is set, but the wandb package is not '
                                              'installed; `pip install wandb` or write `project: ~`')


def find_problems(opt: Any, is_train: bool) -> list[Problem]:
    """Every problem of ``opt`` (a parsed option dict, or the raw YAML when BasicSR cannot parse it)."""
    if not isinstance(opt, dict):
        return [Problem('', f'the file holds {show(opt)} instead of options (`name: ...`, `model_type: ...`, ...)')]
    built, network_problems = _networks(opt)
    problems = [*rule_problems(opt, is_train), *_name(opt), *_devices(opt), *_phases(opt, is_train),
                *network_problems, *_pretrained(opt, is_train, built)]
    return problems + ([*_training(opt), *_packages(opt)] if is_train else [])


def parse_blockers(raw: Any, is_train: bool, debug: bool) -> bool:
    """Whether BasicSR's ``parse_options`` would fail on ``raw`` with a bare KeyError/TypeError."""
    if not isinstance(raw, dict):
        return True
    datasets = raw.get('datasets')
    return ('num_gpu' not in raw or ((is_train or debug) and not isinstance(raw.get('name'), str)) or
            not isinstance(datasets, dict) or not all(isinstance(d, dict) for d in datasets.values()) or
            not isinstance(raw.get('path'), dict) or (is_train and debug and not isinstance(raw.get('logger'), dict)))


def read_option_file(path: str) -> Any:
    """The option file parsed as BasicSR parses it (ordered YAML); unreadable files raise :class:`OptionError`."""
    import yaml
    from basicsr.utils.options import ordered_yaml

    if not os.path.isfile(path):
        raise OptionError(path, [Problem('-opt', f'{path!r} is not a file; pass the path of an option file (.yml)')])
    try:
        with open(path, encoding='utf-8') as f:
            return yaml.load(f, Loader=ordered_yaml()[0])
    except UnicodeDecodeError:
        raise OptionError(path, [Problem('-opt', f'{path!r} is not a text file; pass an option file (.yml)')]) from None
    except yaml.YAMLError as error:
        where = getattr(error, 'problem_mark', None)
        line = f' at line {where.line + 1}' if where is not None else ''
        raise OptionError(path, [Problem('-opt', f'not valid YAML{line}: {getattr(error, "problem", None) or error}')]
                          ) from None


def fill_defaults(opt: dict, is_train: bool) -> None:
    """Fill what BasicSR indexes without a default: ``val`` for testing (the original ``HAT_GAN_Real_SRx4.yml``
    has none) and ``val.suffix`` (without it the first saved validation image fails)."""
    if not is_train and 'val' not in opt:
        opt['val'] = {'save_img': True}
    if isinstance(opt.get('val'), dict):
        opt['val'].setdefault('suffix', None)


def check(opt: dict, is_train: bool, source: str) -> None:
    """Raise :class:`OptionError` listing every problem of the parsed ``opt``, dataset checks included."""
    from hat.data.checks import dataset_problems

    fill_defaults(opt, is_train)
    problems = find_problems(opt, is_train)
    keys = {p.key for p in problems}
    if not keys & {'scale', 'datasets'}:  # the data checks read each sound dataset section
        sound = {phase: ds for phase, ds in opt['datasets'].items()
                 if not any(k == f'datasets.{phase}' or k.startswith(f'datasets.{phase}.') for k in keys)}
        problems += dataset_problems({**opt, 'datasets': sound})
    if problems:
        raise OptionError(source, problems)


def debug_requested() -> bool:
    """Whether the command line has BasicSR's ``--debug`` (which also shows tracebacks of refused runs)."""
    return '--debug' in sys.argv
