"""tests/data/reference says where each file came from: every file there is listed in its README with its
SHA-256 (a changed or added file without a word fails here), and each parity input is the photo crop it names."""
from __future__ import annotations

import hashlib
import re

import numpy as np
import torch
from conftest import REFERENCE_DIR, sample_photo

README = REFERENCE_DIR / 'README.md'


def listed_files() -> dict[str, tuple[str, str]]:
    """README's table: file -> (sha256, how it was produced)."""
    rows = re.findall(r'^\| `([^`]+)` \| `([0-9a-f]{64})` \| (.+) \|$', README.read_text(encoding='utf-8'), re.M)
    return {name: (digest, how) for name, digest, how in rows}


def test_every_reference_file_is_listed_with_its_hash():
    files = {path.relative_to(REFERENCE_DIR).as_posix(): path for path in REFERENCE_DIR.rglob('*')
             if path.is_file() and path != README and '__pycache__' not in path.parts}
    listed = listed_files()
    assert sorted(listed) == sorted(files)
    for name, path in files.items():
        assert hashlib.sha256(path.read_bytes()).hexdigest() == listed[name][0], f'{name} changed; update README'


def test_each_parity_input_is_the_crop_of_the_photo_the_readme_names():
    parity = {name: how for name, (_, how) in listed_files().items() if name.startswith('parity/')}
    assert sorted(parity) == sorted(f'parity/{path.name}' for path in (REFERENCE_DIR / 'parity').glob('*.pt'))
    for name, how in parity.items():
        case = torch.load(REFERENCE_DIR / name, weights_only=True)
        photo_name = re.match(r'input: `(\w+)` crops? at', how)[1]
        assert case['image'].split('.')[0] == photo_name, name
        corners = [tuple(map(int, corner)) for corner in re.findall(r'\((\d+), (\d+)\)', how)]
        photo = sample_photo(photo_name)
        batch, _, height, width = case['input'].shape
        assert case['input'].dtype == torch.float64 and len(corners) == batch, name
        for item, (y, x) in zip(case['input'], corners):
            crop = photo[y:y + height, x:x + width].astype(np.float64) / 255
            assert torch.equal(item, torch.from_numpy(crop).permute(2, 0, 1)), f'{name} at {(y, x)}'
