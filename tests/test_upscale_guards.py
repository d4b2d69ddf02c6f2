"""hat-upscale's guards (issue 10, points 5-10): memory, decompression bombs, unwritable outputs,
SIGTERM and stale temp files, ``-o result.png``, animated images, and one-line messages.

Real files, real subprocesses, real allocation failures; the TINY nearest-neighbour HATs of
test_upscale.py.
"""
from __future__ import annotations

import io
import os
import signal
import struct
import subprocess
import sys
import time
import zlib

import numpy as np
import pytest
import torch
from conftest import sample_photo
from PIL import Image
from test_upscale import (
    NOISY_GAIN,
    OutOfMemoryAbove,
    nearest,
    nearest_hat,
    psnr,
    save_checkpoint,
    summary_counts,
    upscale_cli,
)

from hat.inference.image_io import ImageReadError, read_image, write_image
from hat.inference.plan import TileOutOfMemoryError
from hat.inference.precision import auto_precision
from hat.inference.upscale_cli import main as upscale_cli_main
from hat.inference.upscaler import Upscaler

pytestmark = pytest.mark.usefixtures('one_thread')  # see conftest.torch_threads


@pytest.fixture(scope='module')
def checkpoints(tmp_path_factory):
    """(exact, noisy) checkpoint paths: nearest-neighbour x2, without and with a random body."""
    folder = tmp_path_factory.mktemp('guard_checkpoints')
    return (save_checkpoint(nearest_hat(), folder / 'exact.pth'),
            save_checkpoint(nearest_hat(body_gain=NOISY_GAIN), folder / 'noisy.pth'))


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack('>I', len(payload)) + kind + payload + struct.pack('>I', zlib.crc32(kind + payload))


def zero_png(width: int, height: int) -> bytes:
    """A valid all-black 8-bit gray PNG, compressed row by row: a few hundred kB for 100+ megapixels."""
    compressor = zlib.compressobj(9)
    row = bytes(width + 1)  # filter byte + pixels
    data = b''.join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack('>IIBBBBB', width, height, 8, 0, 0, 0, 0)
    return (b'\x89PNG\r\n\x1a\n' + png_chunk(b'IHDR', header) + png_chunk(b'IDAT', data)
            + png_chunk(b'IEND', b''))


def gif_bytes(frames: int) -> bytes:
    images = [Image.fromarray(sample_photo('chelsea')[i * 10:i * 10 + 32, :40]) for i in range(frames)]
    buffer = io.BytesIO()
    images[0].save(buffer, 'GIF', save_all=frames > 1, append_images=images[1:])
    return buffer.getvalue()


def cli_in_process(*args, cwd, capsys, monkeypatch) -> tuple[int, str]:
    """``hat.inference.upscale_cli.main`` in this process (for refusals; the runs themselves use real subprocesses)."""
    monkeypatch.chdir(cwd)
    capsys.readouterr()
    status = upscale_cli_main([*map(str, args), '--precision', 'fp32'])
    return status, capsys.readouterr().err


def no_traceback(result: subprocess.CompletedProcess) -> None:
    assert 'Traceback' not in result.stderr, result.stderr[-3000:]


# ----------------------------------------------------------------------------- 5. memory
class AllocationFailsAbove(OutOfMemoryAbove):
    """Wraps a HAT; inputs over ``limit`` pixels make a real CPU allocation fail (as under ulimit -v)."""

    def fail(self):
        torch.empty(2 ** 50, dtype=torch.uint8)  # DefaultCPUAllocator: can't allocate memory


def test_cpu_allocation_failure_halves_the_tile_and_names_tile_when_nothing_fits():
    model = nearest_hat(body_gain=NOISY_GAIN)
    rgb = sample_photo('astronaut')[100:164, 180:244]
    whole = Upscaler(model, precision='fp32', tile=None).upscale(rgb)
    wrapped = AllocationFailsAbove(model, limit=1500)
    upscaler = Upscaler(wrapped, precision='fp32', tile=None, tile_pad=8)
    with pytest.warns(UserWarning, match='out of memory with 64px tiles on cpu; retrying with 32px'):
        out = upscaler.upscale(rgb)
    assert upscaler.engine.last_tile == 16 and max(wrapped.sizes) > 1500
    assert psnr(out, whole) >= 40
    with pytest.raises(TileOutOfMemoryError, match=r'does not fit in memory on cpu.*smaller tile.*--tile'), \
            pytest.warns(UserWarning, match='retrying'):
        Upscaler(AllocationFailsAbove(model, limit=1), precision='fp32', tile=None, tile_pad=0).upscale(rgb)


LIMITED_RUN = '''
import resource, sys
import hat.inference.upscale_cli
status = open('/proc/self/status').read()
used = int(status.split('VmSize:')[1].split()[0]) * 1024
room = int(sys.argv[1]) * 2 ** 20
resource.setrlimit(resource.RLIMIT_AS, (used + room, resource.RLIM_INFINITY))
sys.exit(hat.inference.upscale_cli.main(sys.argv[2:]))
'''


def test_default_run_under_ulimit_v_plans_tiles_instead_of_failing(tmp_path):
    """``ulimit -v`` leaves 300 MiB; the whole 256x384 image needs more (its allocation fails with
    --tile off): by default the run plans tiles that fit and gives the whole-image result."""
    model = nearest_hat(body_gain=NOISY_GAIN)
    checkpoint = save_checkpoint(model, tmp_path / 'noisy.pth')
    photo = sample_photo('astronaut')[:256, :384]
    write_image(tmp_path / 'photo.png', photo)
    env = {**os.environ, 'OMP_NUM_THREADS': '1'}
    result = subprocess.run([sys.executable, '-c', LIMITED_RUN, '300', '-i', 'photo.png', '-o', 'out', '-m',
                             checkpoint, '--precision', 'fp32'],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert summary_counts(result) == (1, 0, 0) and 'out of memory' not in result.stderr
    whole = Upscaler(model, precision='fp32', tile=None).upscale(photo)
    assert psnr(read_image(tmp_path / 'out' / 'photo.png'), whole) >= 45


# ----------------------------------------------------------------------------- 6. decompression bombs
def test_decompression_bomb_is_refused_from_its_header(tmp_path, checkpoints):
    exact, _ = checkpoints
    photos = tmp_path / 'photos'
    photos.mkdir()
    (photos / 'bomb.png').write_bytes(zero_png(12000, 10000))  # 120 megapixels in a small file
    assert (photos / 'bomb.png').stat().st_size < 1_000_000
    write_image(photos / 'small.png', sample_photo('coffee')[:40, :56])
    with pytest.raises(ImageReadError, match='12000x10000 = 120 megapixels, above the limit of 100; raise it'):
        read_image(photos / 'bomb.png')
    assert read_image(photos / 'small.png', max_pixels=56 * 40).shape == (40, 56, 3)
    result = upscale_cli('-i', 'photos', '-o', 'out', '-m', exact, '--max-megapixels', '0.002', cwd=tmp_path)
    assert result.returncode == 1 and summary_counts(result) == (0, 0, 2)
    assert 'bomb.png is 12000x10000 = 120 megapixels, above the limit of 0.002; raise it with --max-megapixels' \
        in result.stderr
    assert 'small.png is 56x40 = 0 megapixels, above the limit of 0.002' in result.stderr
    no_traceback(result)


def test_opencv_pixel_limit_is_a_clear_message(tmp_path):
    """Above OpenCV's own limit (2**30 pixels) its raw assertion never reaches the user."""
    header = png_chunk(b'IHDR', struct.pack('>IIBBBBB', 40000, 30000, 8, 0, 0, 0, 0))  # 1.2 gigapixels
    data = png_chunk(b'IDAT', zlib.compress(bytes(100))) + png_chunk(b'IEND', b'')
    header_only = b'\x89PNG\r\n\x1a\n' + header + data
    (tmp_path / 'huge.png').write_bytes(header_only)
    with pytest.raises(ImageReadError, match='larger than 179 megapixels, above the limit of 100'):
        read_image(tmp_path / 'huge.png')
    with pytest.raises(ImageReadError, match='CV_IO_MAX_IMAGE_PIXELS higher') as caught:
        read_image(tmp_path / 'huge.png', max_pixels=None)
    assert 'Assertion failed' not in str(caught.value)


def test_tiles_are_never_smaller_than_a_window():
    upscaler = Upscaler(nearest_hat(), precision='fp32', tile=3)
    assert upscaler.engine.plan.first_tile(40, 40) == upscaler.window_size == 8
    assert upscaler.engine.count_passes(40, 40) == 25


def test_image_whose_result_cannot_fit_is_refused_with_numbers(monkeypatch):
    upscaler = Upscaler(nearest_hat(), precision='fp32')
    monkeypatch.setattr('hat.inference.plan.memory_budget', lambda device: 50 * 2 ** 20)
    with pytest.raises(MemoryError, match=r'a 20000x20000 image does not fit.*x2 result alone needs 23.84 GiB'):
        upscaler.engine.plan.first_tile(20000, 20000)


# ----------------------------------------------------------------------------- 7. writability
def test_unwritable_output_is_refused_before_any_image_is_computed(tmp_path, checkpoints):
    exact, _ = checkpoints
    write_image(tmp_path / 'photo.png', sample_photo('astronaut')[:32, :32])
    (tmp_path / 'blocker').write_text('a file where a folder should be')
    before = sorted(p.name for p in tmp_path.iterdir())
    result = upscale_cli('-i', 'photo.png', '-o', 'blocker/out', '-m', exact, cwd=tmp_path)
    assert result.returncode == 2 and "cannot create the output folder 'blocker/out': 'blocker' is a file" \
        in result.stderr
    assert 'done' not in result.stdout  # refused before the run started
    no_traceback(result)
    assert sorted(p.name for p in tmp_path.iterdir()) == before


# ----------------------------------------------------------------------------- 8. SIGTERM, stale temp files
def test_sigterm_stops_like_ctrl_c_with_complete_outputs_only(tmp_path, checkpoints):
    _, noisy = checkpoints
    photos = tmp_path / 'photos'
    photos.mkdir()
    for i in range(6):
        write_image(photos / f'p{i}.png', sample_photo('astronaut')[50 * i:50 * i + 96, 100:196])
    out = tmp_path / 'out'
    env = {**os.environ, 'OMP_NUM_THREADS': '1'}
    process = subprocess.Popen([sys.executable, '-m', 'hat.inference.upscale_cli', '-i', photos, '-o', out, '-m', noisy,
                                '--tile', '16', '--tile-pad', '8', '--precision', 'fp32'],
                               cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while not (out.is_dir() and any(p.suffix == '.png' for p in out.iterdir())):
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM, stderr[-3000:]
    assert 'terminated (SIGTERM); outputs written so far are complete' in stderr and 'Traceback' not in stderr
    written = sorted(out.iterdir())
    assert 1 <= len(written) < 6 and all(p.suffix == '.png' for p in written)  # no temp file left
    for path in written:
        assert read_image(path).shape == (192, 192, 3)


def test_stale_temp_files_of_a_killed_run_are_removed(tmp_path, checkpoints):
    exact, _ = checkpoints
    write_image(tmp_path / 'photo.png', sample_photo('astronaut')[:32, :32])
    out = tmp_path / 'out'
    out.mkdir()
    (out / '.photo.png.k3j_x9q.tmp').write_bytes(b'half an image')  # ours: atomic_io's pattern
    (out / '.notes.txt.abc.tmp').write_text('not an image temp file: kept')
    (out / 'other.tmp').write_text('not our pattern: kept')
    result = upscale_cli('-i', 'photo.png', '-o', 'out', '-m', exact, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert 'removed 1 temp file(s) left in out by an interrupted run: .photo.png.k3j_x9q.tmp' in result.stderr
    assert sorted(p.name for p in out.iterdir()) == ['.notes.txt.abc.tmp', 'other.tmp', 'photo.png']


# ----------------------------------------------------------------------------- 9. -o result.png
def test_output_with_an_image_extension_and_one_input_is_the_output_file(tmp_path, checkpoints, capsys,
                                                                         monkeypatch):
    exact, _ = checkpoints
    photo = sample_photo('chelsea')[:40, :48]
    write_image(tmp_path / 'cat.png', photo)
    result = upscale_cli('-i', 'cat.png', '-o', 'cat_x2.jpg', '-m', exact, '--precision', 'auto', cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f'on cpu, {auto_precision("cpu")} (auto: this CPU ' in result.stderr  # says which precision it chose
    assert (tmp_path / 'cat_x2.jpg').is_file() and psnr(read_image(tmp_path / 'cat_x2.jpg'), nearest(photo)) > 30
    status, err = cli_in_process('-i', 'cat.png', '-o', 'cat.png', '-m', exact, '--overwrite', cwd=tmp_path,
                                 capsys=capsys, monkeypatch=monkeypatch)
    assert status == 1 and 'is the input image itself' in err
    np.testing.assert_array_equal(read_image(tmp_path / 'cat.png'), photo)
    status, err = cli_in_process('-i', '.', '-o', 'result.png', '-m', exact, cwd=tmp_path, capsys=capsys,
                                 monkeypatch=monkeypatch)
    assert status == 2 and 'names one file' in err and 'give an output folder' in err
    assert not (tmp_path / 'result.png').exists()
    status, err = cli_in_process('-i', 'cat.png', '-o', 'big.png', '-m', exact, '--suffix', '_x2', cwd=tmp_path,
                                 capsys=capsys, monkeypatch=monkeypatch)
    assert status == 2 and '--suffix and --ext apply to an output folder' in err


# ----------------------------------------------------------------------------- 10. animated images
def test_animated_gif_is_refused_whether_named_or_found_in_a_folder(tmp_path, checkpoints, capsys, monkeypatch):
    exact, _ = checkpoints
    album = tmp_path / 'album'
    album.mkdir()
    (album / 'dance.gif').write_bytes(gif_bytes(3))
    (album / 'still.gif').write_bytes(gif_bytes(1))
    write_image(album / 'cat.png', sample_photo('chelsea')[:32, :32])
    message = 'dance.gif has 3 frames (an animation or multi-page file); only still images are upscaled'
    status, err = cli_in_process('-i', album / 'dance.gif', '-o', 'direct', '-m', exact, cwd=tmp_path,
                                 capsys=capsys, monkeypatch=monkeypatch)
    assert status == 1 and message in err
    assert not any((tmp_path / 'direct').glob('*.png'))
    folder = upscale_cli('-i', album, '-o', 'out', '-m', exact, cwd=tmp_path)
    assert folder.returncode == 1 and message in folder.stderr and summary_counts(folder) == (2, 0, 1)
    assert sorted(p.name for p in (tmp_path / 'out').iterdir()) == ['cat.png', 'still.png']
    assert read_image(tmp_path / 'out' / 'still.png').shape[:2] == (64, 80)


# ----------------------------------------------------------------------------- messages
def test_config_that_is_not_yaml_names_the_file(tmp_path, checkpoints):
    exact, _ = checkpoints
    write_image(tmp_path / 'photo.png', sample_photo('astronaut')[:32, :32])
    result = upscale_cli('-i', 'photo.png', '-o', 'out', '-m', exact, '--config', 'photo.png', cwd=tmp_path)
    assert result.returncode == 2
    assert "hat-upscale: error: options file 'photo.png' is not text: expected a BasicSR options YAML" \
        in result.stderr
    assert 'codec' not in result.stderr
    no_traceback(result)
    assert not (tmp_path / 'out').exists()


def test_nan_input_is_blamed_on_the_input_not_the_checkpoint():
    image = sample_photo('astronaut')[:32, :32].astype(np.float32) / 255
    image[3, 4, 1] = np.nan
    with pytest.raises(ValueError, match='the image has 1 NaN or infinite pixel values'):
        Upscaler(nearest_hat(), precision='fp32').upscale(image)
