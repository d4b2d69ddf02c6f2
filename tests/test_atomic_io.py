"""hat.weights.atomic_io: all-or-nothing writes with the umask's mode, no silent overwrite, stale temp files removed."""
from __future__ import annotations

import builtins
import importlib.util
import os
import stat

import pytest
import torch
from test_hat_model import model_options

from hat.models.hat_model import HATModel
from hat.weights import atomic_io
from hat.weights.atomic_io import OutputExistsError, atomic_torch_save, atomic_write_text, remove_stale_temp_files


@pytest.fixture
def umask_027():
    old = os.umask(0o027)
    yield 0o640
    os.umask(old)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def open_descriptors() -> set[str]:
    """This process's open file descriptors (Linux)."""
    if not os.path.isdir('/proc/self/fd'):
        pytest.skip('needs /proc/self/fd to count open descriptors')
    return set(os.listdir('/proc/self/fd'))


@pytest.fixture
def umask_calls(monkeypatch) -> list[int]:
    """Every ``os.umask`` call from here on (each one changes the umask of every thread for a moment)."""
    calls: list[int] = []
    real = os.umask

    def recording(mask: int) -> int:
        calls.append(mask)
        return real(mask)

    monkeypatch.setattr(os, 'umask', recording)
    return calls


def test_files_get_the_mode_of_the_umask_like_torch_save(tmp_path):
    torch.save({'a': 1}, tmp_path / 'plain.pth')
    atomic_torch_save({'a': 1}, tmp_path / 'atomic.pth')
    assert mode(tmp_path / 'atomic.pth') == mode(tmp_path / 'plain.pth')


def test_checkpoints_and_states_follow_a_strict_umask(tmp_path, umask_027):
    model = HATModel(model_options(tmp_path, is_train=True))
    model.save(epoch=0, current_iter=3)
    assert mode(tmp_path / 'net_g_3.pth') == umask_027
    assert mode(tmp_path / '3.state') == umask_027


def test_the_umask_is_read_without_setting_it(tmp_path, umask_027, umask_calls):
    """Setting the umask to read it would give files that other threads create meanwhile (TensorBoard's
    writer, a data-loader thread) the mode that was set for that moment."""
    atomic_write_text(tmp_path / 'meta_info.txt', 'a.png\n')
    assert mode(tmp_path / 'meta_info.txt') == umask_027
    assert atomic_io.umask() == 0o027
    assert umask_calls == []


def test_without_proc_the_umask_is_set_and_restored_once_at_import_and_never_again(tmp_path, umask_027,
                                                                                 umask_calls):
    def no_proc(file, *args, **kwargs):
        if str(file).startswith('/proc/'):
            raise FileNotFoundError(2, 'No such file or directory', file)
        return builtins.open(file, *args, **kwargs)

    spec = importlib.util.spec_from_file_location('atomic_io_without_proc', atomic_io.__file__)
    module = importlib.util.module_from_spec(spec)
    module.open = no_proc  # the module's own open(), as on a system without /proc
    spec.loader.exec_module(module)
    assert len(umask_calls) == 2 and umask_calls[0] == 0o077  # stricter, never looser, for that moment
    module.atomic_write_text(tmp_path / 'a.txt', 'a')
    module.atomic_write_text(tmp_path / 'b.txt', 'b')
    assert mode(tmp_path / 'a.txt') == mode(tmp_path / 'b.txt') == umask_027
    assert len(umask_calls) == 2 and os.umask(0o027) == 0o027


def test_a_failing_chmod_closes_the_temp_file_and_removes_it(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise PermissionError(1, 'Operation not permitted')

    before = open_descriptors()
    monkeypatch.setattr(os, 'chmod', refuse)
    for _ in range(3):
        with pytest.raises(PermissionError):
            atomic_write_text(tmp_path / 'meta_info.txt', 'a.png\n')
    monkeypatch.undo()
    assert open_descriptors() == before
    assert list(tmp_path.iterdir()) == []


def test_refuses_to_overwrite_and_leaves_no_temp_file(tmp_path):
    target = tmp_path / 'meta_info.txt'
    atomic_write_text(target, 'first\n')
    with pytest.raises(OutputExistsError, match='already exists'):
        atomic_write_text(target, 'second\n', overwrite=False)
    assert target.read_text() == 'first\n'
    assert [p.name for p in tmp_path.iterdir()] == ['meta_info.txt']


def test_stale_temp_files_are_removed_by_their_name_only(tmp_path):
    for name in ('.net_g_5.pth.k2j_x9a.tmp', '.out.png.abc123.tmp', 'keep.tmp', '.hidden', 'net_g_5.pth'):
        (tmp_path / name).write_bytes(b'x')
    assert remove_stale_temp_files(tmp_path, ('.pth',)) == ['.net_g_5.pth.k2j_x9a.tmp']
    assert remove_stale_temp_files(tmp_path) == ['.out.png.abc123.tmp']
    assert sorted(p.name for p in tmp_path.iterdir()) == ['.hidden', 'keep.tmp', 'net_g_5.pth']
