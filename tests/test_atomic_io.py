"""hat.weights.atomic_io: all-or-nothing writes with the umask's mode, no silent overwrite, stale temp files removed."""
from __future__ import annotations

import os
import stat

import pytest
import torch
from test_hat_model import model_options

from hat.models.hat_model import HATModel
from hat.weights.atomic_io import OutputExistsError, atomic_torch_save, atomic_write_text, remove_stale_temp_files


@pytest.fixture
def umask_027():
    old = os.umask(0o027)
    yield 0o640
    os.umask(old)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_files_get_the_mode_of_the_umask_like_torch_save(tmp_path):
    torch.save({'a': 1}, tmp_path / 'plain.pth')
    atomic_torch_save({'a': 1}, tmp_path / 'atomic.pth')
    assert mode(tmp_path / 'atomic.pth') == mode(tmp_path / 'plain.pth')


def test_checkpoints_and_states_follow_a_strict_umask(tmp_path, umask_027):
    model = HATModel(model_options(tmp_path, is_train=True))
    model.save(epoch=0, current_iter=3)
    assert mode(tmp_path / 'net_g_3.pth') == umask_027
    assert mode(tmp_path / '3.state') == umask_027


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
