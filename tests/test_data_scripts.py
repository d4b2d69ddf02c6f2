"""The data commands as users run them: ``check_data`` lists every bad image; ``make_lmdb`` and ``make_meta_info``
refuse mistakes in one line naming the flag, and leave nothing behind when they fail."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import lmdb
import pytest
from test_train_support import tiny_options, write_options, write_photos

from hat.scripts import check_data, make_lmdb, make_meta_info


def command(tool: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    """The real command line (starting Python costs seconds here: most cases call ``main`` in-process)."""
    return subprocess.run([sys.executable, '-m', f'hat.scripts.{tool}', *args], cwd=cwd, capture_output=True,
                          text=True, timeout=300)


def refused(main, args: list[str], capsys) -> tuple[int, str]:
    """(exit status, the one error line) of a command's ``main`` that refuses ``args``."""
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    code, err = exit_info.value.code, capsys.readouterr().err
    assert 'Traceback' not in err
    return (1, code) if isinstance(code, str) else (code, err.strip().splitlines()[-1])


def truncate(path: Path) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])
    return path


def files_under(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob('*')) if p.is_file()}


# ------------------------------------------------------ check_data ---------------------------------------------------


def test_check_data_lists_bad_images_of_an_option_file_and_of_folders_and_lmdbs(tmp_path, capsys):
    train = write_photos(tmp_path / 'train', 96, ('astronaut', 'coffee', 'chelsea'))
    truncate(train / 'coffee.png')
    (train / 'empty.png').write_bytes(b'')
    val = write_photos(tmp_path / 'val', 64, ('rocket',))
    opt = tiny_options('check', train, val)
    opt['datasets']['train'].update(type='ImageNetPairedDataset', meta_info_file=str(tmp_path / 'meta.txt'))
    (tmp_path / 'meta.txt').write_text('astronaut.png\ncoffee.png\nempty.png\nmissing.png\n')
    yml = write_options(opt, tmp_path / 'check.yml')

    result = command('check_data', '-opt', str(yml), '--workers', '1', cwd=tmp_path)
    assert result.returncode == 1
    bad = result.stdout.splitlines()
    assert len(bad) == 3 and all(line.startswith('datasets: train (photos): ') for line in bad)
    assert f"'{train / 'coffee.png'}' is not a decodable image" in bad[0]
    assert f"'{train / 'empty.png'}' is an empty file" in bad[1]
    assert f"'{train / 'missing.png'}' cannot be read (No such file or directory)" in bad[2]
    assert 'datasets: train (photos): 3 of 4 images cannot be used' in result.stderr
    assert 'datasets: val (held_out): all 1 images decode' in result.stderr

    make_lmdb.main(['--input', str(val), '--output', str(tmp_path / 'lmdb'), '--name', 'v', '--scale', '2',
                    '--crop-size', '32', '--step', '32', '--workers', '1'])
    db = tmp_path / 'lmdb' / 'v_HR_sub.lmdb'
    with lmdb.open(str(db), map_size=1 << 26) as env, env.begin(write=True) as txn:
        txn.put(b'rocket_s003', b'not a png')
    capsys.readouterr()
    assert check_data.main([str(db), str(val), '--workers', '2']) == 1
    assert capsys.readouterr().out == (f"{db}: 'rocket_s003' in LMDB '{db}' is not a decodable image (corrupt, "
                                       'truncated or not an image)\n')
    assert check_data.main([str(val)]) == 0


def test_check_data_refuses_usage_mistakes_in_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert refused(check_data.main, ['nowhere'], capsys) == (2, f"python -m hat.scripts.check_data: error: nowhere: "
                                                                f"folder 'nowhere' does not exist (relative paths "
                                                                f"start from the folder you run in, '{tmp_path}')")
    (tmp_path / 'photo.png').write_bytes(b'')
    code, line = refused(check_data.main, ['-opt', 'photo.png'], capsys)
    assert code == 2 and line.endswith("-opt: 'photo.png' has no datasets section")


# ------------------------------------------------------- make_lmdb ---------------------------------------------------


def make_lmdb_args(hr: Path, out: Path, *extra: str) -> list[str]:
    return ['--input', str(hr), '--output', str(out), '--name', 'p', '--scale', '2', '--workers', '1', *extra]


def test_make_lmdb_refuses_a_crop_larger_than_every_image_and_writes_nothing(tmp_path):
    hr = write_photos(tmp_path / 'hr', 96)
    result = command('make_lmdb', *make_lmdb_args(hr, tmp_path / 'out', '--crop-size', '128', '--step', '64'),
                     cwd=tmp_path)
    assert result.returncode == 2 and 'Traceback' not in result.stderr
    assert '--crop-size 128 is larger than every image' in result.stderr.strip().splitlines()[-1]
    assert not (tmp_path / 'out').exists()


def test_make_lmdb_names_a_corrupt_image_and_leaves_nothing_behind(tmp_path, capsys):
    hr = write_photos(tmp_path / 'hr', 96, ('astronaut', 'coffee', 'chelsea'))
    truncate(hr / 'coffee.png')  # the header reads; the pixels do not
    out = tmp_path / 'out'
    code, line = refused(make_lmdb.main, make_lmdb_args(hr, out, '--crop-size', '48', '--step', '48'), capsys)
    assert code == 1 and f"cannot read image '{hr / 'coffee.png'}'" in line and 'nothing was written' in line
    assert not out.exists()

    (hr / 'coffee.png').write_text('a text file named like an image')  # no header at all: refused before writing
    out.mkdir()
    code, line = refused(make_lmdb.main, make_lmdb_args(hr, out), capsys)
    assert code == 2 and f"cannot read image '{hr / 'coffee.png'}'" in line
    assert not list(out.iterdir())

    (hr / 'coffee.png').unlink()
    make_lmdb.main(make_lmdb_args(hr, out, '--crop-size', '48', '--step', '48'))
    assert sorted(p.name for p in out.iterdir()) == ['p_HR_sub', 'p_HR_sub.lmdb', 'p_bicx2_sub', 'p_bicx2_sub.lmdb']


def test_make_lmdb_names_the_flag_of_a_missing_input(tmp_path, capsys):
    code, line = refused(make_lmdb.main, make_lmdb_args(tmp_path / 'nowhere', tmp_path / 'out'), capsys)
    assert code == 2 and line.startswith('python -m hat.scripts.make_lmdb: error: --input: folder')
    assert 'does not exist' in line and 'option file' not in line


# ---------------------------------------------------- make_meta_info -------------------------------------------------


def test_make_meta_info_never_writes_over_an_input(tmp_path, capsys):
    hr = write_photos(tmp_path / 'hr', 64)
    before = files_under(hr)
    result = command('make_meta_info', '--input', str(hr), '--meta-info', str(hr / 'astronaut.png'), '--overwrite',
                     cwd=tmp_path)
    assert result.returncode == 2 and 'Traceback' not in result.stderr
    assert f"--meta-info '{hr / 'astronaut.png'}' has an image extension" in result.stderr
    for target in (hr / 'meta_info.txt', hr / 'sub' / 'meta_info.txt', tmp_path / 'list.png'):
        code, line = refused(make_meta_info.main, ['--input', str(hr), '--meta-info', str(target), '--overwrite'],
                             capsys)
        assert code == 2 and '--meta-info' in line
    assert files_under(hr) == before and not (tmp_path / 'list.png').exists()
    make_meta_info.main(['--input', str(hr), '--meta-info', str(tmp_path / 'meta.txt')])
    assert (tmp_path / 'meta.txt').read_text() == 'astronaut.png\ncoffee.png\n'


def test_make_meta_info_names_the_flag_and_a_corrupt_image(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, line = refused(make_meta_info.main, ['--input', 'nowhere', '--meta-info', 'meta.txt'], capsys)
    assert code == 2 and line.endswith(f"--input: folder 'nowhere' does not exist (relative paths start from the "
                                       f"folder you run in, '{tmp_path}')")
    hr = write_photos(tmp_path / 'hr', 64)
    (hr / 'coffee.png').write_bytes(b'\x89PNG')
    code, line = refused(make_meta_info.main, ['--input', str(hr), '--meta-info', 'meta.txt', '--min-size', '32'],
                         capsys)
    assert code == 2 and f"cannot read image '{hr / 'coffee.png'}'" in line
    assert not (tmp_path / 'meta.txt').exists()
