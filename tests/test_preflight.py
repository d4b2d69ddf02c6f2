"""Pre-flight validation: every option mistake is named (key, value, fix) before BasicSR creates, archives or
writes anything; the original release's option files are refused cleanly on a CPU with ``num_gpu: 1`` and run
with ``num_gpu: 0``."""
from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from basicsr.utils.options import ordered_yaml
from original_options import (
    ORIGINAL_TEST_FILES,
    make_original_layout,
    original_test_yaml,
    original_train_yaml,
    save_weights,
)
from test_train_support import command, subprocess_env

from hat.training.preflight import OptionError, check, find_problems

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason='refusing num_gpu: 1 needs a machine without CUDA')


def load_yaml(text: str) -> dict:
    """As BasicSR reads an option file (ordered YAML 1.1: ``2e-4`` is a string, ``!!float 2e-4`` a float)."""
    return yaml.load(text, Loader=ordered_yaml()[0])


def tree(root: Path) -> dict[str, tuple]:
    """Every path under ``root`` with its kind, size and modification time."""
    found = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder) / name
            info = path.stat()
            size = info.st_size if path.is_file() else 0
            found[str(path.relative_to(root))] = (path.is_dir(), size, info.st_mtime_ns)
    return found


@pytest.fixture(scope='module')
def layout(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp('original')
    make_original_layout(root)
    return root


def run_many(script: str, root: Path, files: list[Path], *args: str) -> tuple[list[int], str]:
    """One interpreter that runs ``hat.<script>.main(root)`` once per option file; returns exit codes and stderr."""
    code = (f'import sys\nfrom hat.{script} import main\ncodes = []\n'
            f'for path in {[str(f) for f in files]!r}:\n'
            f'    sys.argv = ["hat/{script}.py", "-opt", path, *{list(args)!r}]\n'
            '    try:\n        main(sys.argv_root)\n        codes.append(0)\n'
            '    except SystemExit as end:\n        codes.append(end.code)\n'
            '    print("[exit]", codes[-1], file=sys.stderr, flush=True)\n'
            'print("CODES", codes)\n').replace('sys.argv_root', repr(str(root)))
    result = subprocess.run([sys.executable, '-c', code], cwd=root, env=subprocess_env(), capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0 and 'CODES' in result.stdout, result.stdout[-3000:] + result.stderr[-5000:]
    return json.loads(result.stdout.split('CODES', 1)[1].strip()), result.stderr


def write_original_test_files(layout, num_gpu: str) -> list:
    """The original release's 15 test option files, saying ``num_gpu``, written into ``layout``."""
    files = [layout / f'{stem}_gpu{num_gpu}.yml' for stem in ORIGINAL_TEST_FILES]
    for stem, path in zip(ORIGINAL_TEST_FILES, files):
        path.write_text(original_test_yaml(stem, num_gpu=num_gpu))
    return files


@no_cuda
@pytest.mark.slow
def test_original_test_files_are_refused_on_a_cpu_before_anything_is_written(layout):
    files = write_original_test_files(layout, num_gpu='1')
    before = tree(layout)
    codes, stderr = run_many('test', layout, files)
    assert tree(layout) == before, 'a refused start wrote, moved or created something'
    assert codes == [2] * len(files), stderr[-3000:]
    assert 'Traceback' not in stderr
    refusals = [line for line in stderr.splitlines() if line.startswith('  num_gpu: 1 asks for a GPU')]
    assert len(refusals) == len(files), stderr[-3000:]
    assert all('set `num_gpu: 0` to run on the CPU, or `num_gpu: auto`' in line for line in refusals)
    assert stderr.count('1 problem, nothing was written') == len(files)


@pytest.mark.slow
def test_original_test_files_run_on_the_cpu_with_num_gpu_0(layout):
    files = write_original_test_files(layout, num_gpu='0')
    codes, stderr = run_many('test', layout, files)
    assert codes == [0] * len(files), stderr[-5000:]
    for stem, (name, _, kind) in ORIGINAL_TEST_FILES.items():
        if kind in ('lr_only', 'real'):
            assert (layout / 'results' / name / 'visualization' / 'custom' / f'photo_{name}.png').is_file(), stem
        else:
            assert (layout / 'results' / name / 'visualization' / 'Set5' / f'baboon_{name}.png').is_file(), stem
    assert not (layout / 'results' / '.locks').exists()


@pytest.mark.slow
def test_finetune_from_x2_with_strict_load_names_the_fix(layout, tmp_path):
    """The original's train_HAT_SRx4_finetune_from_SRx2.yml: x2 weights into x4 with strict_load_g: true."""
    weights = 'experiments/train_HAT_SRx2_from_scratch/models/net_g_latest.pth'
    save_weights(2, tmp_path / weights)
    os.symlink(layout / 'datasets', tmp_path / 'datasets')
    yml = tmp_path / 'train_HAT_SRx4_finetune_from_SRx2.yml'
    yml.write_text(original_train_yaml('train_HAT_SRx4_finetune_from_SRx2', 4, pretrain=f'./{weights}', strict='true',
                                       lr='!!float 1e-4'))
    before = tree(tmp_path)
    result = subprocess.run(command('train', tmp_path, '-opt', str(yml)), cwd=tmp_path, env=subprocess_env(),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr[-3000:]
    assert tree(tmp_path) == before
    assert 'Traceback' not in result.stderr
    (line,) = [x for x in result.stderr.splitlines() if x.startswith('  path.pretrain_network_g:')]
    assert 'x2' in line and 'x4' in line and 'set `strict_load_g: false` to fine-tune across scales' in line

    opt = load_yaml(yml.read_text().replace('strict_load_g: true', 'strict_load_g: false'))
    cwd = os.getcwd()
    os.chdir(tmp_path)  # the original's paths are relative to the working folder
    try:
        assert find_problems(opt, is_train=True) == []
    finally:
        os.chdir(cwd)


#: A mistake (text replaced in an original-style train file) and what its line must say.
MISTAKES = {
    'lr read as a string': ('lr: !!float 2e-4', 'lr: 2e-4', "train.optim_g.lr: '2e-4' is text", 'write 2.0e-4'),
    'batch size in words': ('batch_size_per_gpu: 4', 'batch_size_per_gpu: four',
                            "datasets.train.batch_size_per_gpu: 'four' is not a whole number", 'such as 4'),
    'negative total_iter': ('total_iter: 500000', 'total_iter: -10', 'train.total_iter: -10 is not a whole number',
                            'total_iter: 500000'),
    'zero total_iter': ('total_iter: 500000', 'total_iter: 0', 'train.total_iter: 0 is not', 'number of iterations'),
    'scale vs upscale': ('upscale: 2', 'upscale: 4', 'network_g.upscale: 4 differs from scale: 2', 'make them equal'),
    'a GPU asked for': ('num_gpu: auto', 'num_gpu: 1', 'num_gpu: 1 asks for a GPU', 'num_gpu: 0'),
    'network_g missing': ('network_g:', 'network_x:', 'network_g: missing', 'add the network section'),
    'scale missing': ('scale: 2\n', '', 'scale: missing', 'scale: 4'),
    'network_g does not build': ('embed_dim: 24', 'embed_dim: 25', 'network_g: HAT cannot be built', 'num_heads'),
    'unknown network option': ('mlp_ratio: 2', 'mlp_ratio: 2\n  mlp_ration: 4', 'network_g.mlp_ration: 4 is not an '
                               'option of HAT', 'fix its spelling'),
    'unknown model': ('model_type: HATModel', 'model_type: HATModell', "model_type: 'HATModell' is not a known model",
                      "'HATModel', "),
    'unknown loss': ('type: L1Loss', 'type: L1Los', "train.pixel_opt.type: 'L1Los' is not a known loss", "'L1Loss'"),
    'flag of the network': ('mlp_ratio: 2', 'mlp_ratio: 2\n  ape: "no"', "network_g.ape: 'no' is not true or false",
                            'unquoted'),
    'TensorBoard images': ('save_img: false', 'save_img: false\n  tb_images: -2',
                           'val.tb_images: -2 is not a whole number >= 0', '0 for none'),
    'unknown optimizer': ('type: Adam', 'type: Adamm', "train.optim_g.type: 'Adamm' is not an optimizer", 'type: Adam'),
    'accumulation of zero': ('total_iter: 500000', 'total_iter: 500000\n  accum_iter: 0',
                             'train: accum_iter must be a whole number >= 1', '1: no accumulation'),
    'unknown network format': ('strict_load_g: true', 'strict_load_g: true\n  network_format: onnx',
                               "path: network_format is 'onnx'", 'use pth'),
    'train section missing': ('# training settings\ntrain:', '# training settings\nnot_train:', 'train: missing',
                              'add the `train:` section'),
}


@pytest.mark.parametrize('mistake', sorted(MISTAKES))
def test_each_option_mistake_is_named_with_its_fix(mistake):
    good, bad, line, fix = MISTAKES[mistake]
    if mistake == 'a GPU asked for' and torch.cuda.is_available():
        pytest.skip('refusing num_gpu: 1 needs a machine without CUDA')
    text = original_train_yaml('train_HAT_SRx2_from_scratch', 2)
    assert good in text
    opt = load_yaml(text.replace(good, bad, 1))
    problems = [str(p) for p in find_problems(opt, is_train=True)]
    assert any(p.startswith(line) and fix in p for p in problems), problems


def test_the_original_train_file_has_no_problems():
    assert find_problems(load_yaml(original_train_yaml('train_HAT_SRx2_from_scratch', 2)), is_train=True) == []


def test_network_flags_are_read_from_the_constructor_and_new_keys_are_accepted():
    """Every true/false option of HAT's constructor (the ablation switches use_ocab, use_cab, ... included once HAT
    takes them) is checked as a flag without a list to keep in step; `val.tb_images` is a count."""
    from hat.archs.hat_arch import HAT

    flags = {name: p.default for name, p in inspect.signature(HAT).parameters.items() if isinstance(p.default, bool)}
    opt = load_yaml(original_train_yaml('train_HAT_SRx2_from_scratch', 2))
    opt['network_g'].update({name: 'no' for name in flags})
    keys = {p.key for p in find_problems(opt, is_train=True)}
    assert keys == {f'network_g.{name}' for name in flags} and len(flags) >= 4, keys
    opt['network_g'].update(flags)
    opt['val']['tb_images'] = 4
    assert find_problems(opt, is_train=True) == []


@no_cuda
def test_every_problem_is_reported_at_once():
    text = original_train_yaml('train_HAT_SRx2_from_scratch', 2).replace('lr: !!float 2e-4', 'lr: 2e-4').replace(
        'batch_size_per_gpu: 4', 'batch_size_per_gpu: four').replace('total_iter: 500000', 'total_iter: -1').replace(
        'num_gpu: auto', 'num_gpu: 1').replace('upscale: 2', 'upscale: 4')
    opt = load_yaml(text)
    opt['path'].update(experiments_root='x', training_states='x/training_states')
    with pytest.raises(OptionError) as refused:
        check(opt, is_train=True, source='train.yml')
    keys = [p.key for p in refused.value.problems]
    assert {'train.optim_g.lr', 'datasets.train.batch_size_per_gpu', 'train.total_iter', 'num_gpu',
            'network_g.upscale'} <= set(keys)
    assert str(refused.value).startswith('train.yml: ')


def write_tiny_train(root: Path, name: str, **replace: str) -> Path:
    text = original_train_yaml(name, 2)
    for old, new in replace.items():
        text = text.replace(old, new)
    yml = root / f'{name}.yml'
    yml.write_text(text)
    return yml


@pytest.mark.slow
def test_refused_training_leaves_an_existing_experiment_where_it_is(layout, tmp_path):
    os.symlink(layout / 'datasets', tmp_path / 'datasets')
    earlier = tmp_path / 'experiments' / 'tiny' / 'models' / 'net_g_1000.pth'
    earlier.parent.mkdir(parents=True)
    earlier.write_bytes(b'an earlier run')
    yml = write_tiny_train(tmp_path, 'tiny', **{'lr: !!float 2e-4': 'lr: 2e-4', 'total_iter: 500000': 'total_iter: 0'})
    before = tree(tmp_path)
    result = subprocess.run(command('train', tmp_path, '-opt', str(yml), '--auto_resume'), cwd=tmp_path,
                            env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and 'Traceback' not in result.stderr, result.stderr[-3000:]
    assert tree(tmp_path) == before
    assert 'hat/train.py: refused to start: ' in result.stderr and '2 problems, nothing was written' in result.stderr
    assert "train.optim_g.lr: '2e-4' is text" in result.stderr and 'train.total_iter: 0' in result.stderr

    debug = subprocess.run(command('train', tmp_path, '-opt', str(yml), '--debug'), cwd=tmp_path,
                           env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert debug.returncode != 0 and 'Traceback' in debug.stderr and 'OptionError' in debug.stderr
    assert tree(tmp_path) == before


@pytest.mark.slow
def test_user_mistakes_print_one_line(tmp_path):
    missing = subprocess.run(command('test', tmp_path, '-opt', str(tmp_path / 'no.yml')), cwd=tmp_path,
                             env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert missing.returncode == 2 and 'Traceback' not in missing.stderr
    assert "-opt: '" in missing.stderr and "no.yml' is not a file" in missing.stderr
    broken = tmp_path / 'broken.yml'
    broken.write_text('name: x\nscale: [2\n')
    (tmp_path / 'HAT_SRx4.yml').write_text(original_test_yaml('HAT_SRx4', num_gpu='0'))
    result = subprocess.run(command('test', tmp_path, '-opt', str(broken)), cwd=tmp_path, env=subprocess_env(),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and 'Traceback' not in result.stderr and 'not valid YAML at line' in result.stderr
    forced = subprocess.run(command('test', tmp_path, '-opt', str(tmp_path / 'HAT_SRx4.yml'), '--force_yml',
                                    'nosuch:key=1'), cwd=tmp_path, env=subprocess_env(), capture_output=True, text=True,
                            timeout=300)
    assert forced.returncode == 2 and 'Traceback' not in forced.stderr, forced.stderr[-3000:]
    assert "--force_yml: cannot apply it (KeyError: 'nosuch')" in forced.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ['HAT_SRx4.yml', 'broken.yml']


@pytest.mark.slow
def test_a_mistake_found_after_the_checks_prints_one_line(layout, tmp_path):
    os.symlink(layout / 'datasets', tmp_path / 'datasets')
    state = tmp_path / 'old' / '1000.state'
    state.parent.mkdir()
    state.write_bytes(b'half a training state')
    yml = write_tiny_train(tmp_path, 'tiny', **{'resume_state: ~': f'resume_state: {state}'})
    before = tree(tmp_path)
    result = subprocess.run(command('train', tmp_path, '-opt', str(yml)), cwd=tmp_path, env=subprocess_env(),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and 'Traceback' not in result.stderr, result.stderr[-3000:]
    assert f"path.resume_state: '{state}' does not load (truncated" in result.stderr
    assert tree(tmp_path) == before
