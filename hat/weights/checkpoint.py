"""Reading and writing HAT weights: pick the network, infer the architecture, load strictly.

Formats are recognised by content: ``.pth`` in BasicSR's layout (``params_ema``/``params``) or a bare
state_dict, read with ``weights_only=True`` so a file cannot run code; ``.safetensors`` with the HAT
config in its metadata when ``hat`` wrote it. What ``hat`` writes loads in BasicSR, the original and spandrel.
"""
from __future__ import annotations

import inspect
import json
import math
import os
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, Union

import torch
import yaml

from hat.archs.hat_arch import HAT, NUM_FEAT
from hat.archs.hat_presets import FAMILIES, PRESETS, UNRECORDED_DEFAULTS
from hat.problems import Problem, ProblemsError
from hat.weights.atomic_io import PathLike, atomic_torch_save, atomic_write_bytes

StateDict = dict[str, torch.Tensor]

#: Keys every HAT checkpoint has; their absence means "not a HAT checkpoint".
REQUIRED_KEYS = (
    'conv_first.weight',
    'layers.0.residual_group.blocks.0.attn.relative_position_bias_table',
    'layers.0.residual_group.blocks.0.conv_block.cab.0.weight',
    'layers.0.residual_group.blocks.0.conv_block.cab.3.attention.1.weight',
    'layers.0.residual_group.blocks.0.mlp.fc1.weight',
    'layers.0.residual_group.overlap_attn.relative_position_bias_table',
    'conv_last.weight',
)

#: Keys tried in order when a checkpoint file holds several networks (BasicSR's layout).
PARAM_KEYS = ('params_ema', 'params')

#: Buffers derived from the window size; filled from the model when a checkpoint lacks them.
DERIVED_BUFFERS = ('relative_position_index_SA', 'relative_position_index_OCA')

#: Network file formats ``hat`` writes, by file suffix.
FORMATS = {'pth': '.pth', 'safetensors': '.safetensors'}

#: Where ``hat`` records a network's HAT config: a safetensors metadata entry (JSON) or a .pth top-level key.
CONFIG_KEY = 'hat_config'

#: Safetensors metadata entry naming which of a training checkpoint's networks a file holds.
PARAM_KEY_ENTRY = 'param_key'

#: Bytes per element of safetensors' dtypes (to check a header against the data it describes).
_SAFETENSORS_ITEM_SIZE = {'BOOL': 1, 'U8': 1, 'I8': 1, 'F8_E4M3': 1, 'F8_E5M2': 1, 'U16': 2, 'I16': 2, 'F16': 2,
                          'BF16': 2, 'U32': 4, 'I32': 4, 'F32': 4, 'U64': 8, 'I64': 8, 'F64': 8}

#: Safetensors headers larger than this are damage, not weights (the format's own limit is 100 MB).
_MAX_HEADER = 100_000_000


class CheckpointError(ValueError):
    """A checkpoint that cannot be read as, or does not match, the requested HAT."""


class MissingNetworkError(CheckpointError):
    """The file holds weights, but not of the network (``param_key``) asked for."""


@dataclass
class Checkpoint:
    """One network read from a weights file."""

    state_dict: StateDict
    #: HAT constructor arguments recorded in the file by ``hat``; None when the file does not say.
    config: Optional[dict[str, Any]]
    #: The network of a multi-network file it is (``params_ema``, ``params``); None for a bare one.
    param_key: Optional[str]
    path: str


def read_state_dict(path: PathLike, param_key: Optional[str] = None) -> StateDict:
    """Load the weights in ``path`` (.pth or .safetensors): ``param_key`` if given, else ``params_ema``,
    ``params``, or a bare state_dict."""
    return read_checkpoint(path, param_key).state_dict


def read_network(path: PathLike, param_key: Optional[str] = 'params') -> Checkpoint:
    """``param_key`` of ``path``, or the file's own network when it has no such one: how BasicSR's
    ``pretrain_network_*`` with ``param_key_*`` is read (by HATModel, and by the pre-flight check)."""
    try:
        return read_checkpoint(path, param_key)
    except MissingNetworkError:
        return read_checkpoint(path)


def read_checkpoint(path: PathLike, param_key: Optional[str] = None) -> Checkpoint:
    """Read one network and what the file records about it (see ``read_state_dict``); asking a training
    run's safetensors network file for another ``param_key`` reads that network's file beside it."""
    path = os.fspath(path)
    if _file_format(path) == 'safetensors':
        return _read_safetensors_network(path, param_key)
    return _read_pth(path, param_key)


def _file_format(path: str) -> str:
    """``'pth'`` or ``'safetensors'`` from the file's first bytes; a clear error for anything else."""
    if os.path.isdir(path):
        inside = sorted(n for n in os.listdir(path) if n.lower().endswith(tuple(FORMATS.values())))
        hint = f'pass one of the weights files in it: {", ".join(inside[:5])}' if inside else \
            'it holds no .pth or .safetensors file; pass the path of a weights file'
        raise CheckpointError(f'{path!r} is a folder, not a checkpoint file; {hint}')
    if not os.path.isfile(path):
        raise FileNotFoundError(f'checkpoint not found: {path!r}; pass the path of a .pth or .safetensors file')
    if os.path.getsize(path) == 0:
        raise CheckpointError(f'{path!r} is empty (0 bytes), not a checkpoint: a download or copy that did not '
                              'finish; fetch the file again')
    try:
        with open(path, 'rb') as handle:
            head = handle.read(256)
    except OSError as error:
        raise CheckpointError(f'cannot open {path!r}: {error.strerror or error}') from error
    if head.startswith(b'PK\x03\x04') or head.startswith(b'\x80'):
        return 'pth'  # torch.save's zip archive, or a pickle (the legacy torch format)
    if len(head) > 8 and head[8:9] == b'{' and int.from_bytes(head[:8], 'little') < 2 ** 40:
        return 'safetensors'  # an 8-byte header size, then the JSON header
    lowered = head.lower().lstrip()
    if lowered.startswith(b'version https://git-lfs'):
        raise CheckpointError(f'{path!r} is a Git LFS pointer, not the weights: run `git lfs pull` in its '
                              'repository or download the file itself')
    if lowered.startswith((b'<!doctype html', b'<html')):
        raise CheckpointError(f'{path!r} is a web page, not a checkpoint: the download saved the page that links '
                              'to the file; download the file itself')
    if _looks_like_text(head):
        first = head.decode('utf-8', 'replace').strip().splitlines()[0][:40] if head.strip() else ''
        raise CheckpointError(f'{path!r} is a text file (it starts with {first!r}), not a checkpoint; pass a .pth '
                              'or .safetensors weights file')
    raise CheckpointError(f'{path!r} is neither a PyTorch (.pth) nor a safetensors file (it starts with bytes '
                          f'{head[:8].hex(" ")}); pass a HAT weights file')


def _looks_like_text(head: bytes) -> bool:
    try:
        text = head.decode('utf-8')
    except UnicodeDecodeError as error:
        if error.start < len(head) - 3:  # not just a character cut at the end of what we read
            return False
        text = head[:error.start].decode('utf-8')
    return all(c.isprintable() or c in '\t\r\n' for c in text)


def _read_pth(path: str, param_key: Optional[str]) -> Checkpoint:
    try:
        content = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(f'cannot read {path!r} as a PyTorch weights file (loaded with weights_only=True): '
                              f'{reason}') from error
    if not isinstance(content, Mapping):
        raise CheckpointError(f'{path!r} holds a {type(content).__name__}, not a state_dict')
    if 'optimizers' in content and 'iter' in content:
        raise CheckpointError(f'{path!r} is a training state (optimizers and schedulers, no network); the network '
                              f'of iteration {content["iter"]} is models/net_g_{content["iter"]}.pth')
    config = content.get(CONFIG_KEY) if isinstance(content.get(CONFIG_KEY), Mapping) else None
    keys = [param_key] if param_key else PARAM_KEYS
    found = next((key for key in keys if isinstance(content.get(key), Mapping)), None)
    if found:
        content = content[found]
    elif param_key:
        raise MissingNetworkError(f'{path!r} has no {param_key!r} entry; it has: {sorted(content)[:10]}')
    state_dict = {k.removeprefix('module.'): v for k, v in content.items() if isinstance(v, torch.Tensor)}
    if not state_dict:
        raise CheckpointError(f'{path!r} contains no tensors at the top level or under {list(PARAM_KEYS)}; '
                              f'its entries are: {sorted(content)[:10]}')
    return Checkpoint(state_dict, _checked_config(config, path), found, path)


def _read_safetensors_network(path: str, param_key: Optional[str]) -> Checkpoint:
    tensors, metadata = _read_safetensors(path)
    own_key = metadata.get(PARAM_KEY_ENTRY)
    if param_key and own_key and param_key != own_key:
        companion = companion_path(path, own_key, param_key)
        if companion and os.path.isfile(companion):
            return _read_safetensors_network(companion, param_key)
        raise MissingNetworkError(f'{path!r} has no {param_key!r} entry: it holds {own_key!r}'
                              + (f' and {os.path.basename(companion)!r} does not exist' if companion else ''))
    config = None
    if CONFIG_KEY in metadata:
        try:
            config = json.loads(metadata[CONFIG_KEY])
        except json.JSONDecodeError as error:
            raise CheckpointError(f'{path!r}: its {CONFIG_KEY!r} metadata is not valid JSON ({error})') from error
    state_dict = {k.removeprefix('module.'): v for k, v in tensors.items()}
    if not state_dict:
        raise CheckpointError(f'{path!r} is a safetensors file with no tensors in it')
    return Checkpoint(state_dict, _checked_config(config, path), own_key, path)


def _read_safetensors(path: str) -> tuple[StateDict, dict[str, str]]:
    """Tensors and metadata of a safetensors file, after checking its header against the file's size."""
    size = os.path.getsize(path)
    with open(path, 'rb') as handle:
        start = handle.read(8)
        if len(start) < 8:
            raise CheckpointError(f'{path!r} is truncated: {size} bytes, shorter than the 8-byte size that starts '
                                  'every safetensors file; fetch the file again')
        (header_size,) = struct.unpack('<Q', start)
        if header_size > min(size - 8, _MAX_HEADER):
            raise CheckpointError(f'{path!r} is truncated or damaged: its safetensors header says it is '
                                  f'{header_size} bytes long, but the file has {size} bytes; fetch the file again')
        raw = handle.read(header_size)
    try:
        header = json.loads(raw)
        if not isinstance(header, dict):
            raise ValueError('the header is not a JSON object')
        metadata = header.pop('__metadata__', None) or {}
        data_size, data_end = size - 8 - header_size, 0
        for name, entry in header.items():
            start, stop = (int(v) for v in entry['data_offsets'])
            item = _SAFETENSORS_ITEM_SIZE.get(entry['dtype'])
            nbytes = math.prod(int(n) for n in entry['shape']) * item if item else stop - start
            if stop - start != nbytes or start < 0:
                raise CheckpointError(
                    f'{path!r} has a safetensors header that does not match its data: tensor {name!r} is '
                    f'{entry["dtype"]} {list(entry["shape"])} ({nbytes} bytes) but is given bytes {start}..{stop}; '
                    'the file is damaged, fetch it again')
            data_end = max(data_end, stop)
    except (ValueError, KeyError, TypeError) as error:
        if isinstance(error, CheckpointError):
            raise
        raise CheckpointError(f'{path!r} has a damaged safetensors header ({error}); fetch the file again') from error
    if data_end > data_size:
        raise CheckpointError(f'{path!r} is truncated: its header describes {data_end} bytes of tensors but the file '
                              f'holds {data_size}; the download or copy was cut short, fetch the file again')
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        tensors = load_file(path, device='cpu')
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        raise CheckpointError(f'cannot read {path!r} as a safetensors file: {error}') from error
    return tensors, {str(k): str(v) for k, v in metadata.items()}


def _checked_config(config: Any, path: str) -> Optional[dict[str, Any]]:
    """The HAT config a file records, if it is one (a mapping of HAT constructor arguments)."""
    if config is None:
        return None
    known = set(inspect.signature(HAT).parameters)
    if not isinstance(config, Mapping) or not set(config) <= known:
        extra = sorted(set(config) - known) if isinstance(config, Mapping) else type(config).__name__
        raise CheckpointError(f'{path!r} records a {CONFIG_KEY!r} that is not a HAT config ({extra}); '
                              'convert the weights again with python -m hat.weights.convert')
    return dict(config)


def companion_path(path: PathLike, own_key: str, param_key: str) -> Optional[str]:
    """The file of network ``param_key`` beside ``path``, a training network file of ``own_key``
    (``net_g_1000.safetensors`` -> ``net_g_ema_1000.safetensors``), or None for other names."""
    folder, name = os.path.split(os.fspath(path))
    match = re.fullmatch(r'(?P<stem>.+)_(?P<iter>\d+|latest)\.(?P<ext>\w+)', name)
    own_kind = _kind(own_key)
    if not match or (own_kind and not match['stem'].endswith('_' + own_kind)):
        return None
    label = match['stem'][:-len(own_kind) - 1] if own_kind else match['stem']
    return os.path.join(folder, network_file_name(label, match['iter'], param_key, match['ext']))


def _kind(param_key: str) -> str:
    """``'ema'`` for ``params_ema``, ``''`` for ``params``: the part a network's file name adds."""
    return param_key[len('params'):].strip('_') if param_key.startswith('params') else param_key


def network_file_name(label: str, iteration: Union[int, str], param_key: str = 'params', fmt: str = 'pth') -> str:
    """``net_g_1000.safetensors`` for ``params``, ``net_g_ema_1000.safetensors`` for ``params_ema``."""
    kind = _kind(param_key)
    return f'{label}_{kind}_{iteration}.{fmt}' if kind else f'{label}_{iteration}.{fmt}'


def network_files(models_dir: PathLike, label: str, iteration: Union[int, str]) -> list[str]:
    """Every file of network ``label`` at ``iteration``: the one resume loads (``net_<label>_<iter>.pth`` or
    ``.safetensors``), and for safetensors those of its other param keys; empty when there is none."""
    folder = os.fspath(models_dir)
    candidates = (os.path.join(folder, f'net_{label}_{iteration}{suffix}') for suffix in FORMATS.values())
    main = next((path for path in candidates if os.path.isfile(path)), None)
    if main is None or not main.endswith(FORMATS['safetensors']):
        return [main] if main else []
    pattern = re.compile(rf'net_{re.escape(label)}_[a-z]+_{iteration}\.safetensors')
    return [main] + sorted(os.path.join(folder, n) for n in os.listdir(folder) if pattern.fullmatch(n))


def network_format(opt: Mapping[str, Any]) -> str:
    """The format training writes networks in: ``path: {network_format: pth|safetensors}`` (default pth)."""
    fmt = (opt.get('path') or {}).get('network_format') or 'pth'
    if fmt not in FORMATS:
        raise ProblemsError([Problem('path', f"network_format is {fmt!r}; use pth (BasicSR's default) or safetensors")])
    return fmt


def save_weights(path: PathLike, state_dict: Mapping[str, torch.Tensor], config: Optional[Mapping[str, Any]] = None,
                 param_key: Optional[str] = None, overwrite: bool = True) -> None:
    """Write one network atomically: ``.safetensors`` with ``config`` and ``param_key`` as metadata, else a
    ``.pth`` in BasicSR's layout plus ``config`` under ``hat_config`` (which BasicSR and the original ignore)."""
    tensors = {k: v.detach().to('cpu').contiguous() for k, v in state_dict.items()}
    if os.fspath(path).lower().endswith(FORMATS['safetensors']):
        from safetensors.torch import save

        metadata = {'format': 'pt', 'architecture': 'HAT' if config is not None else 'unknown'}
        if config is not None:
            metadata[CONFIG_KEY] = json.dumps(dict(config), sort_keys=True)
        if param_key:
            metadata[PARAM_KEY_ENTRY] = param_key
        atomic_write_bytes(path, save(tensors, metadata=metadata), overwrite=overwrite)
    else:
        content: dict[str, Any] = {param_key or 'params': tensors}
        if config is not None:
            content[CONFIG_KEY] = dict(config)
        atomic_torch_save(content, path, overwrite=overwrite)


def _square_side(count: int, what: str) -> int:
    side = math.isqrt(count)
    if side * side != count:
        raise CheckpointError(f'{what} has {count} entries, which is not a square: not a HAT checkpoint')
    return side


def _ratio_for(total: int, part: int, what: str) -> int:
    """The integer ``r`` with ``total // r == part`` (the original's ``num_feat // ratio``)."""
    # total // r falls as r grows, so if any r fits, the largest one, total // part, does.
    ratio = total // part if part >= 1 else 0
    if ratio and total // ratio == part:
        return ratio
    raise CheckpointError(f'cannot infer {what}: {part} channels do not come from {total} by an integer ratio')


def _float_ratio(total: int, part: int) -> float:
    """A float ``r`` with ``int(total * r) == part``."""
    ratio = part / total
    return ratio if int(total * ratio) == part else math.nextafter(ratio, math.inf)


def infer_config(state_dict: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """HAT constructor arguments that reproduce ``state_dict``'s layout (``img_range`` and
    ``conv_scale`` are not stored in weights and get their published defaults)."""
    missing = [k for k in REQUIRED_KEYS if k not in state_dict]
    if missing:
        raise CheckpointError(f'not a HAT checkpoint: missing keys {missing} (first keys present: '
                              f'{list(state_dict)[:5]}); these are weights of another architecture or damaged')
    embed_dim, in_chans = state_dict['conv_first.weight'].shape[:2]
    block_ids: dict[int, set[int]] = {}
    for key in state_dict:
        match = re.match(r'layers\.(\d+)\.residual_group\.blocks\.(\d+)\.', key)
        if match:
            block_ids.setdefault(int(match[1]), set()).add(int(match[2]))
    layers = sorted(block_ids)
    if layers != list(range(len(layers))):
        raise CheckpointError(f'residual groups are not numbered 0..n-1: {layers}')
    depths = [len(block_ids[i]) for i in layers]
    num_heads = [state_dict[f'layers.{i}.residual_group.blocks.0.attn.relative_position_bias_table'].shape[1]
                 for i in layers]

    block = 'layers.0.residual_group.blocks.0.'
    window_size = (_square_side(state_dict[block + 'attn.relative_position_bias_table'].shape[0],
                                'the window bias table') + 1) // 2
    oca_side = _square_side(state_dict['layers.0.residual_group.overlap_attn.relative_position_bias_table'].shape[0],
                            'the overlapping-attention bias table')
    enlarge = oca_side + 1 - 2 * window_size
    compress = state_dict[block + 'conv_block.cab.0.weight'].shape[0]
    squeeze = state_dict[block + 'conv_block.cab.3.attention.1.weight'].shape[0]
    hidden = state_dict[block + 'mlp.fc1.weight'].shape[0]

    upsample_convs = sorted(int(m[1]) for k in state_dict if (m := re.match(r'upsample\.(\d+)\.weight$', k)))
    if not upsample_convs:
        upscale = 1
    elif state_dict[f'upsample.{upsample_convs[0]}.weight'].shape[0] == 9 * NUM_FEAT:
        upscale = 3
    else:
        upscale = 2 ** len(upsample_convs)

    config: dict[str, Any] = dict(
        UNRECORDED_DEFAULTS,
        in_chans=int(in_chans),
        img_size=max(UNRECORDED_DEFAULTS['img_size'], window_size),
        embed_dim=int(embed_dim),
        depths=depths,
        num_heads=[int(h) for h in num_heads],
        window_size=window_size,
        compress_ratio=_ratio_for(embed_dim, compress, 'compress_ratio'),
        squeeze_factor=_ratio_for(embed_dim, squeeze, 'squeeze_factor'),
        overlap_ratio=_float_ratio(window_size, enlarge),
        mlp_ratio=_float_ratio(embed_dim, hidden),
        qkv_bias=block + 'attn.qkv.bias' in state_dict,
        patch_norm='patch_embed.norm.weight' in state_dict,
        upscale=upscale,
        resi_connection='1conv' if 'conv_after_body.weight' in state_dict else 'identity',
    )
    if 'absolute_pos_embed' in state_dict:
        config.update(ape=True, img_size=_square_side(state_dict['absolute_pos_embed'].shape[1],
                                                      'absolute_pos_embed'))
    return config


def load_weights(model: HAT, state_dict: Mapping[str, torch.Tensor]) -> HAT:
    """Load ``state_dict`` into ``model`` strictly, explaining any mismatch; returns ``model``."""
    state_dict = {k.removeprefix('module.'): v for k, v in state_dict.items()}
    expected = model.state_dict()
    for name in DERIVED_BUFFERS:
        state_dict.setdefault(name, expected[name])
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    if len(missing) > len(expected) // 2:
        raise CheckpointError(f'not a HAT checkpoint: {len(missing)} of {len(expected)} keys are missing, '
                              f'e.g. {missing[:8]}')
    mismatched = [f'{k}: checkpoint {tuple(v.shape)} vs model {tuple(expected[k].shape)}'
                  for k, v in state_dict.items() if k in expected and v.shape != expected[k].shape]
    details = [text for text, keys in ((f'{len(mismatched)} shapes differ, e.g. {mismatched[:5]}', mismatched),
                                       (f'missing keys {missing[:8]}', missing),
                                       (f'unexpected keys {unexpected[:8]}', unexpected)) if keys]
    if details:
        raise CheckpointError('checkpoint is another HAT variant than the model: ' + '; '.join(details)
                              + '. Build the model from the checkpoint (hat.load_hat) or fix network_g.')
    model.load_state_dict(state_dict, strict=True)
    return model


def config_for(state_dict: Mapping[str, torch.Tensor],
               network_opt: Optional[Mapping[str, Any]] = None) -> dict[str, Any]:
    """The HAT config to record with ``state_dict``: its inferred layout, with the values of an option
    file's ``network_g`` (``img_range``, ``conv_scale``, ...) where it gives them."""
    config = infer_config(state_dict)
    if network_opt:
        config.update({k: v for k, v in network_opt.items() if k in config})
    return config


def variant_name(config: Mapping[str, Any]) -> str:
    """``'HAT-S_SRx4'`` for a published layout, ``'HAT-L body, x8'`` for a published body at another
    scale, else a short description of the layout."""
    layout = ('embed_dim', 'depths', 'num_heads', 'compress_ratio', 'squeeze_factor')
    shared = ('in_chans', 'window_size', 'overlap_ratio', 'mlp_ratio', 'resi_connection')
    for name, preset in PRESETS.items():
        if all(_same(config.get(k), preset[k]) for k in layout + shared + ('upscale',)):
            return name
    for family, body in FAMILIES.items():
        if all(_same(config.get(k), body[k]) for k in layout) and \
                all(_same(config.get(k), PRESETS[f'{family}_SRx4'][k]) for k in shared):
            return f'{family} body, x{config.get("upscale")}'
    return (f'custom HAT (embed_dim {config.get("embed_dim")}, depths {list(config.get("depths", []))}, '
            f'window {config.get("window_size")}, x{config.get("upscale")})')


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (list, tuple)) or isinstance(b, (list, tuple)):
        return a is not None and b is not None and list(a) == list(b)
    if isinstance(a, float) or isinstance(b, float):
        return a is not None and b is not None and math.isclose(a, b, rel_tol=1e-6)
    return a == b


def network_options(config: Union[PathLike, Mapping[str, Any], None]) -> dict[str, Any]:
    """HAT constructor overrides from a BasicSR options file or dict (its ``network_g`` section)."""
    if config is None:
        return {}
    if not isinstance(config, Mapping):
        path = Path(config)
        if not path.is_file():
            raise FileNotFoundError(f'options file not found: {str(path)!r}')
        try:
            config = yaml.safe_load(path.read_text(encoding='utf-8'))
        except (UnicodeDecodeError, yaml.YAMLError) as error:
            problem = 'is not text' if isinstance(error, UnicodeDecodeError) else 'is not valid YAML'
            raise ValueError(f'options file {str(path)!r} {problem}: expected a BasicSR options YAML with a '
                             f'network_g section') from None
        if not isinstance(config, Mapping):
            raise ValueError(f'{str(path)!r} is not an options YAML (expected a mapping with a network_g section)')
    network = dict(config.get('network_g', config))
    kind = network.pop('type', 'HAT')
    if kind != 'HAT':
        raise ValueError(f'network_g type is {kind!r}; hat-upscale runs HAT networks only')
    return network


def load_hat(source: Union[PathLike, Mapping[str, torch.Tensor]], device: Union[str, torch.device] = 'cpu',
             param_key: Optional[str] = None, band_tokens: Optional[int] = None, **overrides: Any) -> HAT:
    """Build a HAT from a checkpoint path or state_dict and load it strictly, in eval mode; the config is the recorded
    one, else inferred, with ``overrides`` on top; ``band_tokens`` sets banded inference (``HAT.set_banded``)."""
    if isinstance(source, Mapping):
        state_dict, recorded, where = source, None, None
    else:
        checkpoint = read_checkpoint(source, param_key)
        state_dict, recorded, where = checkpoint.state_dict, checkpoint.config, checkpoint.path
    if recorded is None:
        model = load_weights(HAT(**{**infer_config(state_dict), **overrides}), state_dict)
    else:
        try:
            model = load_weights(HAT(**{**recorded, **overrides}), state_dict)
        except (CheckpointError, TypeError, ValueError) as error:
            raise CheckpointError(f'the HAT config recorded in {where!r} ({CONFIG_KEY}) does not fit its weights: '
                                  f'{error}') from error
    model.set_banded(band_tokens)
    return model.eval().to(device)
