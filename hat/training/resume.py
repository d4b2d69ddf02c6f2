"""Which training state a run resumes from, said out loud, never silently further back in time.

``--auto_resume`` takes the newest state that loads (``weights_only=True``, onto the CPU) with its network
files, naming any newer state it passes over; when none loads the run is refused (docs/training.md).
"""
from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Optional


class ResumeError(ValueError):
    """The run asks to resume, and the state it would resume from cannot be loaded; ``key`` names the option."""

    def __init__(self, key: str, text: str) -> None:
        self.key, self.text = key, text
        super().__init__(f'{key}: {text}')


@dataclass
class ResumePlan:
    """The state a run resumes from (``None``: it starts at iteration 0) and the newer states passed over."""

    state_path: Optional[str] = None
    state: Optional[dict] = None
    networks: dict[str, str] = field(default_factory=dict)  # label -> file the resume loads it from
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (state path, why it cannot be resumed)

    def note(self) -> Optional[str]:
        """One line naming the skipped states, why, and the iterations lost; None when nothing was skipped."""
        if not self.skipped:
            return None
        newest = _iteration(self.skipped[0][0])
        reasons = '; '.join(f'{os.path.basename(path)} {why}' for path, why in self.skipped)
        return (f'--auto_resume: resuming from iteration {self.state["iter"]}, not the newest state {newest}, which '
                f'loses {newest - self.state["iter"]} iterations of training. Skipped: {reasons}')


def _iteration(path: str) -> int:
    return int(os.path.basename(path)[:-len('.state')])


def _labels(opt: dict) -> list[str]:
    """The networks a resume loads from the experiment (all ``network_*`` not in ``ignore_resume_networks``)."""
    ignored = opt['path'].get('ignore_resume_networks') or []
    return [key[len('network_'):] for key in opt if key.startswith('network_') and key not in ignored]


def _try_state(opt: dict, path: str) -> tuple[Optional[ResumePlan], Optional[str]]:
    """(plan resuming from ``path``, None), or (None, why it cannot be resumed)."""
    import torch

    from hat.weights.checkpoint import CheckpointError, network_files, read_checkpoint

    try:
        state = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as error:
        if 'Unsupported global' in str(error):  # torch's weights_only unpickler refused an object
            return None, 'holds objects that weights_only=True refuses to load (code, not only tensors)'
        return None, 'does not load (truncated, or not a training state)'
    if not isinstance(state, dict) or not isinstance(state.get('iter'), int):
        return None, 'is not a BasicSR training state (no iteration in it)'
    networks, models = {}, opt['path'].get('models') or os.path.dirname(path)
    for label in _labels(opt):
        files = network_files(models, label, state['iter'])
        if not files:
            return None, f'has no network file net_{label}_{state["iter"]}.pth (or .safetensors) in {models}'
        for file in files:
            try:
                read_checkpoint(file)
            except (CheckpointError, OSError) as error:
                return None, f'has a network file that does not load: {error}'
        networks[label] = files[0]
    return ResumePlan(path, state, networks), None


def plan_resume(opt: dict) -> ResumePlan:
    """What this run resumes from: with ``--auto_resume`` the newest state that loads (or ``path: resume_state``
    when the experiment has no state yet), else ``path: resume_state``; raises :class:`ResumeError`."""
    states_dir = opt['path'].get('training_states')
    names = os.listdir(states_dir) if opt.get('auto_resume') and states_dir and os.path.isdir(states_dir) else []
    paths = sorted((os.path.join(states_dir, n) for n in names if re.fullmatch(r'\d+\.state', n)),
                   key=_iteration, reverse=True)
    skipped = []
    for path in paths:
        plan, why = _try_state(opt, path)
        if plan:
            plan.skipped = skipped
            return plan
        skipped.append((path, why))
    if skipped:
        reasons = '; '.join(f'{path} {why}' for path, why in skipped)
        raise ResumeError('--auto_resume', f'no training state of experiment {opt.get("name")!r} can be resumed: '
                          f'{reasons}. Nothing was changed. To start again from iteration 0 on purpose, run without '
                          '--auto_resume (BasicSR archives the experiment folder first)')
    path = opt['path'].get('resume_state')
    if not path:
        return ResumePlan()
    if not os.path.isfile(path):
        raise ResumeError('path.resume_state', f'{path!r} does not exist; fix the path, use --auto_resume, or set '
                          '`resume_state: ~`')
    plan, why = _try_state(opt, path)
    if plan is None:
        raise ResumeError('path.resume_state', f'{path!r} {why}; pick an older state or use --auto_resume')
    return plan


def check_resume(opt: dict, built: dict[str, Any], add: Callable[[str, str], None],
                 check_fit: Callable[[Any, str, str, Optional[str], bool], None]) -> set[str]:
    """Pre-flight of a resumed run: the state it will load, and the network files of that state against the
    networks of the options; returns the labels whose ``pretrain_network_*`` the resume replaces."""
    try:
        plan = plan_resume(opt)
    except ResumeError as error:
        add(error.key, error.text)
        return set(_labels(opt))
    for label, file in plan.networks.items():
        if label in built:
            param_key = opt['path'].get(f'param_key_{label}', 'params')
            check_fit(built[label], file, label, 'params' if param_key == 'params_ema' else param_key,
                      opt['path'].get(f'strict_load_{label}', True) is not False)
    return set(plan.networks)


def load_resume_state(opt: dict, notes: Optional[list[str]] = None) -> Optional[dict]:
    """basicsr.train.load_resume_state on CPU or GPU, from :func:`plan_resume`; what was skipped goes to stderr
    and to ``notes`` (lines for the training log, which BasicSR opens later)."""
    from basicsr.utils.misc import check_resume as basicsr_check_resume

    from hat.weights.atomic_io import remove_stale_temp_files

    for folder in (opt['path']['models'], opt['path']['training_states']):
        for name in remove_stale_temp_files(folder, ('.pth', '.state', '.safetensors')):
            print(f'[hat] removed {name}, a checkpoint write interrupted by a crash', file=sys.stderr)
    plan = plan_resume(opt)
    if plan.state is None:
        return None
    if plan.note():
        print(f'[hat] warning: {plan.note()}', file=sys.stderr, flush=True)
        if notes is not None:
            notes.append(plan.note())
    opt['path']['resume_state'] = plan.state_path
    basicsr_check_resume(opt, plan.state['iter'])
    for label, file in plan.networks.items():  # check_resume names the .pth; the .safetensors may be what exists
        opt['path'][f'pretrain_network_{label}'] = file
    return plan.state
