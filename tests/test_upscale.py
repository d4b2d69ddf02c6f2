"""hat.Upscaler and the hat-upscale command on real photos, real files and real subprocesses.

The checkpoints are TINY HATs whose weights make them nearest-neighbour x2 upscalers plus
``body_gain`` times their (random) transformer body. With ``body_gain=0`` every output is
known exactly, so channel order, bit depth, gray and alpha handling are checked pixel for
pixel; with a small gain the body's attention shapes the result, which is what tiling,
half precision and the self-ensemble are checked on.
"""
from __future__ import annotations

import importlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml
from conftest import TINY_CONFIG, sample_photo

import hat
from hat.archs.hat_arch import HAT
from hat.inference import plan
from hat.inference.engine import TTA_TRANSFORMS
from hat.inference.image_io import encode_image, read_image, write_image
from hat.inference.upscaler import Upscaler

NOISY_GAIN = 0.05


# ----------------------------------------------------------------------------- helpers
def nearest_hat(in_chans: int = 3, body_gain: float = 0.0, img_range: float = 1.0, seed: int = 0) -> HAT:
    """TINY HAT x2 = nearest-neighbour upscaling + ``body_gain`` x its random body (see module doc)."""
    torch.manual_seed(seed)
    model = HAT(**{**TINY_CONFIG, 'in_chans': in_chans, 'img_range': img_range})
    state = model.state_dict()

    def pick(weight: torch.Tensor, pairs) -> None:
        weight.zero_()
        for out_ch, in_ch in pairs:
            weight[out_ch, in_ch, 1, 1] = 1.0

    channels = range(in_chans)
    with torch.no_grad():
        pick(state['conv_first.weight'], [(c, c) for c in channels])
        state['conv_first.bias'].zero_()
        state['conv_after_body.weight'].mul_(body_gain)
        state['conv_after_body.bias'].zero_()
        # +img_range keeps the features positive through the LeakyReLU; conv_last takes it off again.
        pick(state['conv_before_upsample.0.weight'], [(c, c) for c in channels])
        state['conv_before_upsample.0.bias'].zero_()
        state['conv_before_upsample.0.bias'][:in_chans] = img_range
        pick(state['upsample.0.weight'], [(4 * c + k, c) for c in channels for k in range(4)])
        state['upsample.0.bias'].zero_()
        pick(state['conv_last.weight'], [(c, c) for c in channels])
        state['conv_last.bias'].fill_(-img_range)
    model.load_state_dict(state)
    return model.eval()


def save_checkpoint(model: torch.nn.Module, path: Path, key: str = 'params_ema') -> Path:
    torch.save({key: model.state_dict()}, path)
    return path


def nearest(image: np.ndarray, scale: int = 2) -> np.ndarray:
    return image.repeat(scale, axis=0).repeat(scale, axis=1)


def psnr(a: np.ndarray, b: np.ndarray, peak: float = 255.0) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float('inf') if mse == 0 else 10 * np.log10(peak ** 2 / mse)


def rgba_photo(size: int = 48) -> np.ndarray:
    """A photo crop with a soft round alpha mask (opaque centre, transparent corners)."""
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2
    alpha = np.clip(255 * (1.2 - np.hypot(yy, xx) / (size / 2)), 0, 255).astype(np.uint8)
    return np.dstack([sample_photo('astronaut')[60:60 + size, 200:200 + size], alpha])


def photo16() -> np.ndarray:
    """16-bit RGB whose low byte carries detail 8 bits cannot hold."""
    image = sample_photo('coffee')[100:148, 200:248].astype(np.uint16) * 256
    return image + (np.arange(48, dtype=np.uint16)[None, :, None] * 5 + np.arange(3, dtype=np.uint16))


def assert_close(actual: np.ndarray, expected: np.ndarray, atol: int = 1) -> None:
    assert actual.shape == expected.shape and actual.dtype == expected.dtype
    assert np.abs(actual.astype(np.int64) - expected.astype(np.int64)).max() <= atol


pytestmark = pytest.mark.usefixtures('one_thread')  # see conftest.torch_threads


@pytest.fixture(scope='module')
def exact() -> Upscaler:
    return Upscaler(nearest_hat(), precision='fp32')


@pytest.fixture(scope='module')
def noisy() -> HAT:
    return nearest_hat(body_gain=NOISY_GAIN)


# ----------------------------------------------------------------------------- Python API
def test_upscaler_is_exported_and_the_command_is_a_console_script():
    assert hat.Upscaler is Upscaler
    # setup.py's entry point names the command-line module, whose name says it is not the engine.
    setup_py = (Path(__file__).resolve().parents[1] / 'setup.py').read_text()
    module, function = re.search(r"'hat-upscale=([\w.]+):(\w+)'", setup_py).groups()
    assert module == 'hat.inference.upscale_cli' and callable(getattr(importlib.import_module(module), function))
    assert not (Path(hat.__file__).parent / 'upscale.py').exists()  # nothing two letters away from upscaler.py


def test_every_pixel_layout_keeps_its_channels_dtype_and_colours(exact):
    rgb = sample_photo('astronaut')[:40, :56]
    assert_close(exact.upscale(rgb), nearest(rgb))
    assert_close(exact.upscale(photo16()), nearest(photo16()))
    gray = sample_photo('camera')[:40, :40, 0]
    assert_close(exact.upscale(gray), nearest(gray))
    assert_close(exact.upscale(gray[..., None]), nearest(gray[..., None]))
    rgba = rgba_photo()
    out = exact.upscale(rgba)
    assert_close(out[..., :3], nearest(rgba[..., :3]))
    bicubic_alpha = cv2.resize(rgba[..., 3], (96, 96), interpolation=cv2.INTER_CUBIC)
    assert_close(out[..., 3], bicubic_alpha)
    gray_alpha = np.dstack([gray[:40, :40], rgba[:40, :40, 3]])
    out = exact.upscale(gray_alpha)
    assert out.shape == (80, 80, 2)
    assert_close(out[..., 0], nearest(gray[:40, :40]))
    floats = rgb.astype(np.float32) / 255
    out = exact.upscale(floats)
    assert out.dtype == np.float32 and np.abs(out - nearest(floats)).max() < 1e-5


def test_one_channel_model_runs_gray_directly_and_colour_on_luma():
    upscaler = Upscaler(nearest_hat(in_chans=1), precision='fp32')
    gray = sample_photo('camera')[:40, :40, 0]
    assert_close(upscaler.upscale(gray), nearest(gray))
    rgb = sample_photo('astronaut')[:40, :40]
    out = upscaler.upscale(rgb)
    assert out.shape == (80, 80, 3)
    # Luma is upscaled exactly; chroma bicubically, so colours stay close to the photo's.
    luma = cv2.cvtColor(out, cv2.COLOR_RGB2YCrCb)[..., 0]
    assert_close(luma, nearest(cv2.cvtColor(rgb, cv2.COLOR_RGB2YCrCb)[..., 0]), atol=2)
    assert psnr(out, nearest(rgb)) > 28


def test_checkpoint_path_is_loaded_with_its_variant_detected(tmp_path):
    path = save_checkpoint(nearest_hat(), tmp_path / 'net_g.pth', key='params')
    upscaler = Upscaler(path, precision='fp32')
    assert (upscaler.scale, upscaler.window_size, upscaler.in_chans) == (2, 8, 3)
    rgb = sample_photo('chelsea')[:32, :48]
    assert_close(upscaler.upscale(rgb), nearest(rgb))


def test_config_yaml_overrides_what_weights_cannot_tell(tmp_path):
    # A checkpoint trained with img_range=255: run at the default 1, its body weighs 255x too much.
    path = save_checkpoint(nearest_hat(body_gain=NOISY_GAIN * 255, img_range=255.0), tmp_path / 'range255.pth')
    options = tmp_path / 'options.yml'
    options.write_text(yaml.safe_dump({'name': 'x', 'network_g': {'type': 'HAT', 'img_range': 255.0}}))
    rgb = sample_photo('astronaut')[100:148, 180:228]
    right = Upscaler(path, config=options, precision='fp32').upscale(rgb)
    wrong = Upscaler(path, precision='fp32').upscale(rgb)
    assert psnr(right, nearest(rgb)) > 35 > psnr(wrong, nearest(rgb))
    options.write_text(yaml.safe_dump({'network_g': {'type': 'SwinIR'}}))
    with pytest.raises(ValueError, match='HAT networks only'):
        Upscaler(path, config=options, precision='fp32')


def test_tiles_match_the_whole_image():
    model = nearest_hat(body_gain=1.0)  # the random body dominates: any seam would show
    rgb = sample_photo('astronaut')[100:196, 180:260]
    whole = Upscaler(model, precision='fp32').upscale(rgb)
    assert psnr(whole, nearest(rgb)) < 20
    for tile in (32, 40):
        assert psnr(Upscaler(model, tile=tile, tile_pad=32, precision='fp32').upscale(rgb), whole) >= 50
    assert psnr(Upscaler(model, tile=32, tile_pad=8, precision='fp32').upscale(rgb), whole) < 50  # too little context


def test_auto_tile_follows_the_memory_budget(noisy, monkeypatch):
    rgb = sample_photo('astronaut')[100:196, 180:276]
    upscaler = Upscaler(noisy, tile='auto', tile_pad=16, precision='fp32')
    assert upscaler.engine.plan.first_tile(96, 96) is None  # plenty of memory: one pass
    whole = upscaler.upscale(rgb)
    per_pixel = upscaler.engine.plan.tile_bytes(8, 8) / 64
    budget = per_pixel * 80 * 80 + (3 + 1) * 96 * 96 * 4 * 4  # an 80x80 tile and the blended output
    monkeypatch.setattr('hat.inference.plan.memory_budget', lambda device: budget)
    assert upscaler.engine.plan.first_tile(96, 96) == 80 - 2 * 16 - 2 * 8
    assert upscaler.engine.count_passes(96, 96) == 9
    assert psnr(upscaler.upscale(rgb), whole) >= 45 and upscaler.engine.last_tile == 32


def test_memory_model_grows_with_pixels_and_picks_the_largest_fitting_tile(noisy):
    cpu = torch.device('cpu')
    fp32 = plan.TilePlan(noisy, cpu, torch.float32, tile_pad=16)
    small = fp32.tile_bytes(64, 64)
    assert small < fp32.tile_bytes(128, 128) <= 4 * small  # bands: band temporaries are fixed
    assert fp32.tile_bytes(60, 60) == small  # padded to the window
    assert plan.bytes_per_float(torch.float16, torch.device('cuda')) < plan.bytes_per_float(torch.float32, cpu)
    assert plan.TilePlan(noisy, cpu, torch.bfloat16).tile_bytes(64, 64) > small
    assert plan.TilePlan(noisy, cpu, tta=True).tile_bytes(64, 64) > small
    budget = fp32.tile_bytes(120, 120)
    assert fp32.largest_tile(1000, 1000, budget) == 120 - 2 * 16 - 2 * 8
    assert fp32.largest_tile(100, 100, budget) is None
    assert fp32.largest_tile(1000, 1000, 1.0) == 8
    assert plan.memory_budget(cpu) > 0


class OutOfMemoryAbove(torch.nn.Module):
    """Wraps a HAT; raises PyTorch's out-of-memory error for inputs over ``limit`` pixels."""

    def __init__(self, model: HAT, limit: int):
        super().__init__()
        self.model, self.limit, self.sizes = model, limit, []
        self.window_size, self.upscale, self.in_chans = model.window_size, model.upscale, model.in_chans

    def forward(self, x):
        self.sizes.append(x.shape[-2] * x.shape[-1])
        if x.shape[-2] * x.shape[-1] > self.limit:
            self.fail()
        return self.model(x)

    def fail(self):
        raise torch.OutOfMemoryError('CUDA out of memory. Tried to allocate 2.00 GiB')


def test_out_of_memory_halves_the_tile_and_carries_on(noisy):
    rgb = sample_photo('astronaut')[100:164, 180:244]
    whole = Upscaler(noisy, precision='fp32').upscale(rgb)
    wrapped = OutOfMemoryAbove(noisy, limit=1500)  # 40x40 tiles (32 + context) do not fit
    upscaler = Upscaler(wrapped, tile=None, tile_pad=8, precision='fp32')
    with pytest.warns(UserWarning, match='out of memory'):
        out = upscaler.upscale(rgb)
    assert upscaler.engine.last_tile == 16 and max(wrapped.sizes) > 1500
    assert psnr(out, whole) >= 40
    with pytest.raises(RuntimeError, match='does not fit'), pytest.warns(UserWarning, match='retrying'):
        Upscaler(OutOfMemoryAbove(noisy, limit=1), tile=None, tile_pad=0, precision='fp32').upscale(rgb)


def test_bf16_on_cpu_matches_fp32_and_fp16_on_cpu_is_refused(noisy):
    rgb = sample_photo('astronaut')[100:164, 180:244]
    fp32 = Upscaler(noisy, precision='fp32').upscale(rgb)
    assert psnr(Upscaler(noisy, precision='bf16').upscale(rgb), fp32) >= 45
    with pytest.raises(ValueError, match='fp16 needs a CUDA device'):
        Upscaler(noisy, precision='fp16')
    with pytest.raises(ValueError, match='CUDA is not available|does not exist'):
        Upscaler(noisy, device='cuda:99', precision='fp32')


class NonFiniteWhenHalf(torch.nn.Module):
    """Wraps a HAT; returns inf under autocast, as fp16 overflow would."""

    def __init__(self, model: HAT):
        super().__init__()
        self.model = model
        self.window_size, self.upscale, self.in_chans = model.window_size, model.upscale, model.in_chans

    def forward(self, x):
        out = self.model(x)
        return out * float('inf') if torch.is_autocast_enabled(x.device.type) else out


def test_non_finite_half_output_is_redone_in_fp32(noisy):
    rgb = sample_photo('chelsea')[:48, :48]
    fp32 = Upscaler(noisy, precision='fp32').upscale(rgb)
    with pytest.warns(UserWarning, match='NaN/inf.*fp32'):
        out = Upscaler(NonFiniteWhenHalf(noisy), precision='bf16', tile=None).upscale(rgb)
    np.testing.assert_array_equal(out, fp32)


def test_self_ensemble_averages_the_eight_inverse_transformed_outputs(noisy):
    rgb = sample_photo('astronaut')[100:140, 180:228]  # not square: transposes change the shape
    out = Upscaler(noisy, tta=True, precision='fp32').upscale(rgb)
    # Nearest-neighbour is flip/transpose invariant, the random body is not: averaging helps.
    assert psnr(out, nearest(rgb)) > psnr(Upscaler(noisy, precision='fp32').upscale(rgb), nearest(rgb)) + 1
    x = torch.from_numpy(rgb.astype(np.float32) / 255).permute(2, 0, 1)[None]
    outputs = []
    for transpose, flip_h, flip_w in TTA_TRANSFORMS:
        y = x.flip(-2) if flip_h else x
        y = y.flip(-1) if flip_w else y
        y = noisy(y.transpose(-2, -1) if transpose else y)
        y = y.transpose(-2, -1) if transpose else y
        y = y.flip(-1) if flip_w else y
        outputs.append(y.flip(-2) if flip_h else y)
    assert len(outputs) == 8
    expected = (torch.stack(outputs).mean(0)[0].clamp(0, 1).permute(1, 2, 0).detach().numpy() * 255 + 0.5)
    assert_close(out, expected.astype(np.uint8))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU')
@pytest.mark.parametrize('precision', ['fp16', 'bf16'])
def test_half_precision_on_cuda_matches_fp32(noisy, precision):
    rgb = sample_photo('astronaut')[100:228, 180:308]
    fp32 = Upscaler(noisy, device='cuda', precision='fp32').upscale(rgb)
    assert psnr(Upscaler(noisy, device='cuda', precision=precision).upscale(rgb), fp32) >= 45
    auto = Upscaler(noisy, device='cuda', precision=precision, tile='auto')
    assert auto.engine.plan.first_tile(128, 128) is None
    assert psnr(auto.upscale(rgb), fp32) >= 45


# ----------------------------------------------------------------------------- command line
def upscale_cli(*args, cwd: Path, **popen) -> subprocess.CompletedProcess:
    """Run ``python -m hat.inference.upscale_cli`` for real (in fp32 unless ``--precision`` is given: exact pixels)."""
    env = {**os.environ, 'OMP_NUM_THREADS': '1'}  # see one_thread
    args = [*map(str, args), *([] if '--precision' in args else ['--precision', 'fp32'])]
    return subprocess.run([sys.executable, '-m', 'hat.inference.upscale_cli', *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300, **popen)


def summary_counts(result: subprocess.CompletedProcess) -> tuple[int, int, int]:
    match = re.search(r'(\d+) done, (\d+) skipped, (\d+) failed', result.stdout)
    assert match, result.stdout + result.stderr
    return tuple(int(n) for n in match.groups())


@pytest.fixture(scope='module')
def photo_folder(tmp_path_factory):
    """A folder of photos as people have them, plus broken files, upscaled once by the command."""
    root = tmp_path_factory.mktemp('upscale_cli')
    photos = root / 'photos'
    photos.mkdir()
    write_image(photos / 'astronaut.png', sample_photo('astronaut')[100:196, 180:260])
    write_image(photos / 'coffee16.png', photo16())
    write_image(photos / 'camera.png', sample_photo('camera')[200:248, 200:264, 0])
    write_image(photos / 'logo.png', rgba_photo())
    cv2.imwrite(str(photos / 'chelsea.jpg'), sample_photo('chelsea')[50:114, 150:214, ::-1])
    good = encode_image(sample_photo('coffee')[:64, :64], '.png')
    (photos / 'truncated.png').write_bytes(good[:len(good) // 3])
    (photos / 'text.jpg').write_text('this is not a JPEG')
    (photos / 'notes.txt').write_text('not an image either')
    exact_ckpt = save_checkpoint(nearest_hat(), root / 'exact.pth')
    noisy_ckpt = save_checkpoint(nearest_hat(body_gain=NOISY_GAIN), root / 'noisy.pth')
    result = upscale_cli('-i', photos, '-o', root / 'out', '-m', exact_ckpt, cwd=root)
    return root, photos, root / 'out', exact_ckpt, noisy_ckpt, result


def test_folder_of_mixed_images(photo_folder):
    root, photos, out, _, _, result = photo_folder
    assert result.returncode == 1, result.stderr
    assert summary_counts(result) == (5, 1, 2)
    assert 'megapixels/s' in result.stdout and 'images' in result.stderr  # summary and progress bar
    assert 'truncated.png is not a readable image' in result.stderr
    assert 'text.jpg is not a readable image' in result.stderr
    assert 'notes.txt: not an image file' in result.stderr
    assert sorted(p.name for p in out.iterdir()) == ['astronaut.png', 'camera.png', 'chelsea.png',
                                                     'coffee16.png', 'logo.png']
    for name in ('astronaut.png', 'coffee16.png', 'camera.png'):
        assert_close(read_image(out / name), nearest(read_image(photos / name)))
    assert read_image(out / 'coffee16.png').dtype == np.uint16 and read_image(out / 'camera.png').ndim == 2
    logo = read_image(out / 'logo.png')
    assert_close(logo[..., :3], nearest(rgba_photo()[..., :3]))
    assert_close(logo[..., 3], cv2.resize(rgba_photo()[..., 3], (96, 96), interpolation=cv2.INTER_CUBIC))
    assert_close(read_image(out / 'chelsea.png'), nearest(read_image(photos / 'chelsea.jpg')))


def test_existing_outputs_are_kept_unless_overwrite(photo_folder, tmp_path):
    root, photos, first_out, exact_ckpt, noisy_ckpt, _ = photo_folder
    out = tmp_path / 'out'
    shutil.copytree(first_out, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    again = upscale_cli('-i', photos, '-o', out, '-m', noisy_ckpt, cwd=root)
    assert again.returncode == 1 and summary_counts(again) == (0, 1, 7)
    assert again.stderr.count('already exists; pass --overwrite') >= 5
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before

    skip = upscale_cli('-i', photos, '-o', out, '-m', noisy_ckpt, '--skip-existing', cwd=root)
    assert skip.returncode == 1 and summary_counts(skip) == (0, 6, 2)  # only the broken files fail
    assert 'already exists' not in skip.stderr
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before

    replace = upscale_cli('-i', photos, '-o', out, '-m', noisy_ckpt, '--overwrite', cwd=root)
    assert summary_counts(replace) == (5, 1, 2)
    after = {p.name: p.read_bytes() for p in out.iterdir()}
    assert sorted(after) == sorted(before) and all(after[name] != before[name] for name in before)


def test_tiled_command_matches_the_whole_image(photo_folder, tmp_path):
    root, photos, *_ = photo_folder
    model = nearest_hat(body_gain=1.0)
    checkpoint = save_checkpoint(model, tmp_path / 'random_body.pth')
    result = upscale_cli('-i', photos / 'astronaut.png', '-o', tmp_path / 'out', '-m', checkpoint,
                         '--tile', 48, '--tile-pad', 32, '--device', 'cpu', cwd=root)
    assert result.returncode == 0, result.stderr
    assert summary_counts(result) == (1, 0, 0) and 'pass' in result.stderr  # a bar over the 4 tiles
    whole = Upscaler(model, precision='fp32').upscale(read_image(photos / 'astronaut.png'))
    assert psnr(read_image(tmp_path / 'out' / 'astronaut.png'), whole) >= 50


def test_not_a_hat_checkpoint_is_a_clear_error(photo_folder, tmp_path):
    root, photos, *_ = photo_folder
    other = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3), torch.nn.ReLU(), torch.nn.Conv2d(16, 3, 3))
    checkpoint = save_checkpoint(other, tmp_path / 'other.pth', key='params')
    result = upscale_cli('-i', photos, '-o', tmp_path / 'out', '-m', checkpoint, cwd=root)
    assert result.returncode == 2
    assert 'hat-upscale: error: not a HAT checkpoint' in result.stderr and 'Traceback' not in result.stderr
    assert not (tmp_path / 'out').exists()


def test_refuses_to_write_into_the_input_folder_without_a_suffix(photo_folder):
    root, photos, _, exact_ckpt, *_ = photo_folder
    before = sorted(p.name for p in photos.iterdir())
    result = upscale_cli('-i', photos, '-o', photos, '-m', exact_ckpt, cwd=root)
    assert result.returncode == 2 and 'refusing to write into the input folder' in result.stderr
    assert '--suffix' in result.stderr and sorted(p.name for p in photos.iterdir()) == before


def test_recursive_glob_with_suffix_writes_next_to_the_inputs(tmp_path):
    album = tmp_path / 'album'
    (album / 'trip').mkdir(parents=True)
    write_image(album / 'cat.png', sample_photo('chelsea')[:40, :48])
    cv2.imwrite(str(album / 'trip' / 'rocket.jpg'), sample_photo('rocket')[100:140, 200:248, ::-1])
    write_image(album / 'cat_x2.png', sample_photo('coffee')[:8, :8])  # an unrelated file with the output's name
    checkpoint = save_checkpoint(nearest_hat(), tmp_path / 'exact.pth')
    result = upscale_cli('-i', 'album/**/*.*', '-o', 'album', '-m', checkpoint, '--recursive',
                         '--suffix', '_x2', '--ext', 'same', cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    # cat.png's output would be cat_x2.png, which is an input: refused, never overwritten.
    assert summary_counts(result) == (2, 0, 1) and 'is one of the input images' in result.stderr
    assert read_image(album / 'cat_x2.png').shape == (8, 8, 3)
    assert_close(read_image(album / 'cat_x2_x2.png'), nearest(sample_photo('coffee')[:8, :8]))
    rocket = read_image(album / 'trip' / 'rocket_x2.jpg')
    assert rocket.shape == (80, 96, 3) and psnr(rocket, nearest(read_image(album / 'trip' / 'rocket.jpg'))) > 30
