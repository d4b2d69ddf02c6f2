"""HATModel: BasicSR's SRModel with hat-upscale's inference engine and safe checkpoints.

Validation and testing run through ``hat.inference.engine`` (any image size, planned or ``tile:`` tiles,
out-of-memory halving); distributed training works on CPU (gloo); networks and training states are written
atomically, as .pth or (``path: {network_format: safetensors}``) .safetensors, so a killed run never leaves a
truncated checkpoint; weights are read with ``weights_only=True`` and clear errors for a missing or wrong file.
"""
from __future__ import annotations

import os
from typing import Optional

import torch
from basicsr.models.sr_model import SRModel
from basicsr.utils import get_root_logger
from basicsr.utils.dist_util import master_only
from basicsr.utils.registry import MODEL_REGISTRY
from torch.nn.parallel import DistributedDataParallel

from hat.archs.hat_arch import HAT
from hat.inference.engine import InferenceEngine
from hat.models.per_image_metrics import PerImageValidation
from hat.models.train_step import TrainStepMixin
from hat.weights.atomic_io import atomic_torch_save


def _cpu_state_dict(net: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {key.removeprefix('module.'): value.cpu() for key, value in net.state_dict().items()}


@MODEL_REGISTRY.register()
class HATModel(PerImageValidation, TrainStepMixin, SRModel):
    """SR model for HAT: any image size in validation and testing, each image's metrics written
    (hat.models.per_image_metrics), and the training switches of hat.models.train_switches."""

    def test(self):
        """Super-resolve ``self.lq`` with hat-upscale's engine and the bare network (EMA if kept), float32 on the host.

        Not through DDP: BasicSR validates on rank 0 only, and a DDP forward broadcasts buffers to all ranks
        (gloo fails, NCCL hangs)."""
        net = self.get_bare_model(self.net_g_ema if hasattr(self, 'net_g_ema') else self.net_g)
        was_training = net.training
        net.eval()
        tile = self.opt.get('tile') or {}
        self.output = InferenceEngine(net, self.device, tile=tile.get('tile_size', 'auto'),
                                      tile_pad=tile.get('tile_pad', 32)).run(self.lq)
        net.train(was_training)

    def model_to_device(self, net: torch.nn.Module) -> torch.nn.Module:
        """As SRModel, but distributed runs on CPU wrap the network without CUDA device ids."""
        if self.opt['dist'] and self.device.type == 'cpu':
            return DistributedDataParallel(net.to(self.device), find_unused_parameters=self.opt.get(
                'find_unused_parameters', False))
        return super().model_to_device(net)

    def load_network(self, net: torch.nn.Module, load_path: str, strict: bool = True,
                     param_key: Optional[str] = 'params') -> None:
        """Load ``param_key`` of a .pth or .safetensors file with ``weights_only=True``; a file without that
        network gives its own (BasicSR falls back from params_ema to params the same way)."""
        from hat.weights.checkpoint import CheckpointError, load_weights, read_network

        if not os.path.exists(load_path):
            raise FileNotFoundError(f'pretrained network {load_path!r} (path: pretrain_network_g) does not exist; '
                                    'fix the path or remove the option to train from scratch')
        checkpoint = read_network(load_path, param_key)
        net = self.get_bare_model(net)
        get_root_logger().info(f'Loading {type(net).__name__} from {checkpoint.path} '
                               f'[{checkpoint.param_key or "the only network"}].')
        try:
            if strict and isinstance(net, HAT):
                load_weights(net, checkpoint.state_dict)
            else:
                self._print_different_keys_loading(net, checkpoint.state_dict, strict)
                net.load_state_dict(checkpoint.state_dict, strict=strict)
        except (CheckpointError, RuntimeError) as error:
            raise CheckpointError(f'{load_path!r} does not fit network_g: {error}') from error

    @master_only
    def save_network(self, net, net_label: str, current_iter: int, param_key='params') -> None:
        """Write ``models/<label>_<iter>.pth`` (``latest`` for -1) atomically, in BasicSR's layout; with
        ``path: {network_format: safetensors}`` one ``.safetensors`` file per network, the HAT config as metadata."""
        from hat.weights.checkpoint import config_for, network_file_name, network_format, save_weights

        nets = net if isinstance(net, list) else [net]
        keys = param_key if isinstance(param_key, list) else [param_key]
        if len(nets) != len(keys):
            raise ValueError(f'{len(nets)} networks but {len(keys)} param keys')
        name = 'latest' if current_iter == -1 else current_iter
        models = self.opt['path']['models']
        if network_format(self.opt) == 'pth':
            save_dict = {key: _cpu_state_dict(self.get_bare_model(n)) for n, key in zip(nets, keys)}
            atomic_torch_save(save_dict, os.path.join(models, f'{net_label}_{name}.pth'))
            return
        network_opt = self.opt.get('network_' + net_label.removeprefix('net_'))
        for n, key in zip(nets, keys):
            bare = self.get_bare_model(n)
            state_dict = _cpu_state_dict(bare)
            config = config_for(state_dict, network_opt) if isinstance(bare, HAT) else None
            save_weights(os.path.join(models, network_file_name(net_label, name, key, 'safetensors')), state_dict,
                         config, key)

    @master_only
    def save_training_state(self, epoch: int, current_iter: int) -> None:
        """Write ``training_states/<iter>.state`` (optimizers, schedulers) atomically; nothing for -1."""
        if current_iter == -1:
            return
        state = {'epoch': epoch, 'iter': current_iter,
                 'optimizers': [o.state_dict() for o in self.optimizers],
                 'schedulers': [s.state_dict() for s in self.schedulers]}
        atomic_torch_save(state, os.path.join(self.opt['path']['training_states'], f'{current_iter}.state'))
