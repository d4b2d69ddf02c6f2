"""state_dict layout and parameter counts identical to the original for the published variants."""
import json

import pytest
import torch

from hat import PRESETS, create_hat
from tests.conftest import REFERENCE_DIR
from tests.oracles import PUBLISHED_NUM_PARAMS

REFERENCE = json.loads((REFERENCE_DIR / 'hat_official_state_dicts.json').read_text())


def test_presets_cover_every_published_variant():
    assert set(PRESETS) == set(REFERENCE)
    for name, entry in REFERENCE.items():
        assert PRESETS[name] == entry['config'], name
        assert PUBLISHED_NUM_PARAMS[name] == entry['num_params'], name


@pytest.mark.parametrize('name', sorted(REFERENCE))
def test_state_dict_matches_original(name):
    entry = REFERENCE[name]
    model = create_hat(name)
    state = model.state_dict()
    assert list(state) == list(entry['state_dict'])
    for key, (shape, dtype) in entry['state_dict'].items():
        assert list(state[key].shape) == shape, key
        assert str(state[key].dtype) == f'torch.{dtype}', key
    assert sum(p.numel() for p in model.parameters()) == entry['num_params']


def test_relative_position_buffers_have_original_values():
    model = create_hat('HAT-S_SRx2', depths=[1], num_heads=[6])
    sa = model.relative_position_index_SA
    oca = model.relative_position_index_OCA
    assert sa.shape == (256, 256) and oca.shape == (256, 576)
    assert sa.dtype == oca.dtype == torch.int64
    assert sa.min() == 0 and sa.max() == 31 * 31 - 1
    assert torch.equal(sa.diagonal(), torch.full((256,), 15 * 31 + 15))
    # The original's OCA offset leaves some indices negative (they wrap around the table).
    assert oca.min() == -880 and oca.max() == 640
