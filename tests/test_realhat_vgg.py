"""The perceptual loss's VGG comes from a local file or random init, never from a download."""
from __future__ import annotations

import pytest
import torch
import yaml
from basicsr.archs import vgg_arch
from basicsr.losses import build_loss
from torchvision.models import vgg as torchvision_vgg

from hat.losses import LocalVGGPerceptualLoss, build_vgg_feature_extractor
from tests.conftest import REPO_ROOT, sample_photo, to_tensor

GAN_YML = REPO_ROOT / 'options/train/train_Real_HAT_GAN_SRx4_finetune_from_mse_model.yml'


@pytest.fixture(autouse=True)
def no_downloads(monkeypatch):
    """Any attempt to fetch weights fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError(f'tried to download {args} {kwargs}')

    monkeypatch.setattr(torch.hub, 'load_state_dict_from_url', refuse)
    monkeypatch.setattr(torch.hub, 'download_url_to_file', refuse)


def recipe_perceptual_opt(**changes) -> dict:
    opt = yaml.safe_load(GAN_YML.read_text())['train']['perceptual_opt']
    opt.update(changes)
    return opt


@pytest.fixture(scope='module')
def vgg11_file(tmp_path_factory):
    """torchvision VGG11 convolutional weights saved the torchvision way (``features.N.*``), and the reference net."""
    torch.manual_seed(0)
    net = torchvision_vgg.vgg11(weights=None)
    path = tmp_path_factory.mktemp('vgg') / 'vgg11_features.pth'
    torch.save({f'features.{key}': value for key, value in net.features.state_dict().items()}, path)
    return path, net.features.eval()


def test_random_init_builds_basicsr_extractor_with_the_requested_layers():
    extractor = build_vgg_feature_extractor(['conv1_2', 'conv3_4', 'conv5_4'], random_init=True)
    features = extractor(to_tensor(sample_photo('astronaut')[:64, :64]))
    assert {key: tuple(value.shape) for key, value in features.items()} == {
        'conv1_2': (1, 64, 64, 64), 'conv3_4': (1, 256, 16, 16), 'conv5_4': (1, 512, 4, 4)}
    assert all(value.std() > 0 for value in features.values())
    assert not any(p.requires_grad for p in extractor.parameters())


def test_weights_come_from_the_local_file(vgg11_file):
    path, reference = vgg11_file
    extractor = build_vgg_feature_extractor(['conv4_2'], weights_path=str(path), vgg_type='vgg11',
                                            use_input_norm=False)
    x = to_tensor(sample_photo('coffee')[:48, :48])
    with torch.no_grad():
        expected = reference[:14](x)  # conv1_1 ... conv4_2 of VGG11, before its relu
    torch.testing.assert_close(extractor(x)['conv4_2'], expected)


def test_missing_weights_file_is_named_with_the_fix(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the recipe's relative path does not exist here
    with pytest.raises(FileNotFoundError, match='experiments/pretrained_models/vgg19-dcbb9e9d.pth'):
        build_loss(recipe_perceptual_opt())


@pytest.mark.parametrize('changes,message', [
    ({'vgg_weights_path': None}, 'set vgg_weights_path'),
    ({'vgg_random_init': True}, 'not both'),
])
def test_ambiguous_weight_source_is_refused(changes, message):
    with pytest.raises(ValueError, match=message):
        build_loss(recipe_perceptual_opt(**changes))


def test_file_of_another_network_is_refused(tmp_path):
    path = tmp_path / 'not_vgg.pth'
    torch.save({'params': {'conv.weight': torch.zeros(1)}}, path)
    with pytest.raises(ValueError, match=f'{path} does not hold torchvision vgg19 weights'):
        build_vgg_feature_extractor(['conv1_2'], weights_path=str(path))


def test_basicsr_globals_are_restored_even_after_an_error(tmp_path):
    before = vgg_arch.vgg, vgg_arch.VGG_PRETRAIN_PATH
    build_vgg_feature_extractor(['conv1_1'], random_init=True)
    with pytest.raises(ValueError):
        build_vgg_feature_extractor(['conv1_1'], weights_path=str(REPO_ROOT / 'pyproject.toml'))
    assert (vgg_arch.vgg, vgg_arch.VGG_PRETRAIN_PATH) == before


def test_recipe_perceptual_loss_with_random_vgg_gives_finite_loss_and_gradients():
    loss = build_loss(recipe_perceptual_opt(vgg_weights_path=None, vgg_random_init=True))
    assert isinstance(loss, LocalVGGPerceptualLoss)
    assert loss.layer_weights == {'conv1_2': 0.1, 'conv2_2': 0.1, 'conv3_4': 1, 'conv4_4': 1, 'conv5_4': 1}
    gt = to_tensor(sample_photo('chelsea')[:32, :32])
    output = (gt + 0.1 * torch.randn_like(gt)).clamp(0, 1).requires_grad_()
    percep, style = loss(output, gt)
    assert style is None and torch.isfinite(percep) and percep > 0
    percep.backward()
    assert torch.isfinite(output.grad).all() and output.grad.abs().sum() > 0
    assert loss(gt, gt)[0] == 0
