"""Benchmark HAT: forward throughput, training step time, peak memory and achieved FLOP/s.

Every variant of one (model, size, mode) runs in this one process, so the ratios printed at the
end compare like with like: the original formulation vs this project's explicit and fused
attention, float32 vs bfloat16/float16, eager vs ``torch.compile``, gradient checkpointing off
vs on. A variant is written ``attention:dtype[:compile][:ckpt]``, e.g. ``original:fp32``,
``explicit:fp32``, ``fused:bf16:compile``, ``fused:fp32:ckpt``; ``original`` is
``benchmarks/original_hat.py`` (the authors' formulation, same weights). The first variant of
``--variants`` is the baseline of the ratios.

Modes: ``forward`` (inference, model cast to the dtype), ``train`` (forward + L1 loss + backward
+ Adam step; bf16/fp16 run under autocast with float32 weights, fp16 with a GradScaler) and
``tiled`` (forward through ``hat.inference.plan.tiled_forward`` with ``--tile``/``--tile-pad``).

Each row is the median of ``--repeat`` timed runs after ``--warmup`` untimed ones, with the
spread (min-max); the variants of one (model, size, mode) are timed in interleaved rounds, so a
change of machine load hits them alike. Throughput is in LR (input) megapixels per second.
FLOPs are counted once per shape with ``torch.utils.flop_counter`` on the meta device (2 per
multiply-add; training counts forward + backward, not the recomputation of checkpointing).
Peak memory is the variant's tensors alive before the call (weights, optimizer state, inputs)
plus the peak of what the call allocates (CUDA's counters; on CPU the profiler's memory
events). "% peak" is the achieved FLOP/s over the measured FLOP/s of a large square GEMM in the
dtype the row runs in (fp32 GEMM for fp32 rows, bf16 for bf16 rows, fp16 for fp16 rows; 2048^3
on CPU, 8192^3 on GPU; GPUs also print their datasheet figure), so it reads "fraction of what
this machine's matrix units do in that precision"; override with ``--peak-tflops``. The header
names the CPU, its bf16 features (AVX-512-BF16, AMX) as /proc/cpuinfo and torch see them, the
torch version and the git commit. ``--json`` is rewritten after every group (partial results
survive an interrupted run); ``--markdown`` writes the table docs/benchmarks.md takes.

Examples::

    python benchmarks/bench_hat.py --models HAT --sizes 64 --modes forward --threads 2
    python benchmarks/bench_hat.py --models HAT --sizes 64 256 --modes forward --threads 1 --clock process \
        --variants original:fp32 fused:fp32 fused:bf16 --markdown bf16.md
    python benchmarks/bench_hat.py --models HAT --sizes 16 --modes train --batch 4 --threads 2
    python benchmarks/bench_hat.py --device cuda --models HAT-S HAT HAT-L --sizes 64 256
    python benchmarks/bench_hat.py --models HAT-S --sizes 256 --modes forward tiled --tile 128
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from bench_env import describe, header
from original_hat import OriginalHAT
from torch.utils.flop_counter import FlopCounterMode

import hat  # noqa: F401  (registers HAT)
from hat.archs.hat_arch import HAT
from hat.archs.hat_presets import preset_config
from hat.inference.plan import is_out_of_memory, tiled_forward
from hat.inference.precision import PRECISIONS as DTYPES

MODES = ('forward', 'train', 'tiled')
ATTENTIONS = ('original', 'explicit', 'fused')

#: Dense datasheet peaks in TFLOP/s (bf16, fp16 with tensor cores; fp32 without), by device name.
GPU_PEAK_TFLOPS = [
    ('H100 PCIe', {'bf16': 756.0, 'fp16': 756.0, 'fp32': 51.2}),
    ('H100', {'bf16': 989.4, 'fp16': 989.4, 'fp32': 66.9}),
    ('H200', {'bf16': 989.4, 'fp16': 989.4, 'fp32': 66.9}),
    ('H20', {'bf16': 148.0, 'fp16': 148.0, 'fp32': 44.0}),
    ('A100', {'bf16': 312.0, 'fp16': 312.0, 'fp32': 19.5}),
    ('L40S', {'bf16': 362.1, 'fp16': 362.1, 'fp32': 91.6}),
    ('RTX 4090', {'bf16': 165.2, 'fp16': 165.2, 'fp32': 82.6}),
]


@dataclass(frozen=True)
class Variant:
    """One way of running the model: formulation/attention path, precision, compilation, checkpointing."""

    attention: str = 'fused'
    dtype: str = 'fp32'
    compile: bool = False
    checkpoint: bool = False

    @classmethod
    def parse(cls, spec: str) -> Variant:
        parts = spec.split(':')
        if len(parts) < 2 or parts[0] not in ATTENTIONS or parts[1] not in DTYPES:
            raise argparse.ArgumentTypeError(
                f'bad variant {spec!r}: write attention:dtype[:compile][:ckpt], attention in {"/".join(ATTENTIONS)}, '
                f'dtype in {"/".join(DTYPES)}, e.g. fused:bf16:compile')
        flags = set(parts[2:])
        unknown = flags - {'compile', 'ckpt'}
        if unknown:
            raise argparse.ArgumentTypeError(f'bad variant {spec!r}: unknown flag(s) {sorted(unknown)}; '
                                             f'use compile and/or ckpt')
        if parts[0] == 'original' and 'ckpt' in flags:
            raise argparse.ArgumentTypeError(f'bad variant {spec!r}: the original formulation has no checkpointing')
        return cls(parts[0], parts[1], 'compile' in flags, 'ckpt' in flags)

    def __str__(self) -> str:
        return ':'.join([self.attention, self.dtype] + ['compile'] * self.compile + ['ckpt'] * self.checkpoint)


@dataclass
class Result:
    """One row of the table."""

    model: str
    size: int
    batch: int
    mode: str
    variant: str
    times_s: list = field(default_factory=list)
    peak_mb: Optional[float] = None
    flops: Optional[float] = None
    peak_flops: Optional[float] = None
    first_call_s: Optional[float] = None
    max_abs_diff: Optional[float] = None
    error: Optional[str] = None
    scale: Optional[int] = None

    @property
    def median_s(self) -> Optional[float]:
        return statistics.median(self.times_s) if self.times_s else None

    def summary(self) -> dict:
        row = asdict(self)
        median = self.median_s
        if median:
            row.update(median_s=median, images_per_s=self.batch / median,
                       lr_megapixels_per_s=self.batch * self.size ** 2 / 1e6 / median)
            if self.flops:
                row['tflops_per_s'] = self.flops / median / 1e12
                if self.peak_flops:
                    row['fraction_of_peak'] = self.flops / median / self.peak_flops
        return row


def synchronize(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


#: ``wall``: elapsed time. ``process``: CPU time of this process, all threads; on a shared CPU
#: with ``--threads 1`` it is barely affected by other programs' load.
CLOCKS = {'wall': time.perf_counter, 'process': time.process_time}


def timed(fn: Callable[[], object], device: torch.device, clock: str = 'wall') -> float:
    """Seconds of one call, device work included."""
    now = CLOCKS[clock]
    synchronize(device)
    start = now()
    fn()
    synchronize(device)
    return now() - start


def tensor_bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors if torch.is_tensor(t))


def peak_memory_bytes(fn: Callable[[], object], device: torch.device, resident: int) -> tuple[int, object]:
    """Peak bytes of tensors during ``fn``: ``resident`` (this variant's tensors alive before the
    call) plus the peak of what the call allocates, from CUDA's counters or the CPU profiler;
    and what ``fn`` returned."""
    if device.type == 'cuda':
        synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        out = fn()
        synchronize(device)
        return resident + torch.cuda.max_memory_allocated(device) - before, out
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as prof:
        out = fn()
    return resident + profiler_peak_bytes(prof), out


def profiler_peak_bytes(prof: torch.profiler.profile) -> int:
    """Peak of the running total of the allocations and frees a CPU profile recorded."""
    current = peak = 0
    for event in sorted(prof.events(), key=lambda e: e.time_range.start):
        current += event.self_cpu_memory_usage
        peak = max(peak, current)
    return peak


def count_flops(config: dict, batch: int, size: int, train: bool) -> float:
    """FLOPs of one forward (or forward + backward), counted on the meta device."""
    model = HAT(**config).to('meta').train(train)
    model.set_fused_attention(False)
    x = torch.empty(batch, config['in_chans'], size, size, device='meta')
    counter = FlopCounterMode(display=False)
    with counter:
        if train:
            model(x).sum().backward()
        else:
            with torch.no_grad():
                model(x)
    return float(counter.get_total_flops())


def measured_gemm_peak(device: torch.device, dtype: torch.dtype, n: Optional[int] = None, clock: str = 'wall') -> float:
    """FLOP/s of a large square matmul in ``dtype`` (best of 5): the practical peak of this device at
    this dtype. 2048^3 on CPU, 8192^3 on GPU (smaller ones leave a GPU's tensor cores idle)."""
    n = n or (8192 if device.type == 'cuda' else 2048)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(2):
        a @ b
    return 2 * n ** 3 / min(timed(lambda: a @ b, device, clock) for _ in range(5))


def datasheet_peak(device: torch.device, dtype_name: str) -> Optional[float]:
    """Dense datasheet FLOP/s of a known GPU at this dtype, else None."""
    if device.type != 'cuda':
        return None
    name = torch.cuda.get_device_name(device)
    return next((peaks[dtype_name] * 1e12 for key, peaks in GPU_PEAK_TFLOPS if key in name), None)


def device_peak(device: torch.device, dtype_name: str, override_tflops: Optional[float],
                clock: str = 'wall') -> tuple[float, str]:
    """The FLOP/s the "% peak" column divides by for rows in ``dtype_name``, and where it comes from."""
    if override_tflops:
        return override_tflops * 1e12, '--peak-tflops'
    n = 8192 if device.type == 'cuda' else 2048
    source = f'measured {dtype_name} GEMM {n}^3'
    datasheet = datasheet_peak(device, dtype_name)
    if datasheet:
        source += f'; datasheet {datasheet / 1e12:.1f} TFLOP/s'
    return measured_gemm_peak(device, DTYPES[dtype_name], n, clock), source


def build_model(config: dict, variant: Variant, device: torch.device, train: bool) -> torch.nn.Module:
    """The network of ``variant`` with the same (seeded) weights whatever the variant."""
    torch.manual_seed(0)
    model = HAT(**config)
    if variant.attention == 'original':
        original = OriginalHAT(**config)
        original.load_state_dict(model.state_dict(), strict=True)
        model = original.to(device)
    else:
        model.to(device)
        model.set_fused_attention(variant.attention == 'fused')
        model.set_grad_checkpointing(variant.checkpoint)
    if train:
        model.train()
    else:
        model.to(DTYPES[variant.dtype]).eval()
        if variant.attention == 'fused' and not variant.compile:
            model.set_banded()  # memory-bounded inference, as hat.load_hat and hat-upscale run it
    return torch.compile(model) if variant.compile else model


def forward_fn(model, x: torch.Tensor, mode: str, scale: int, window: int, tile: int, tile_pad: int):
    def run():
        with torch.inference_mode():
            if mode == 'tiled':
                return tiled_forward(model, x, scale, tile, tile_pad, align=window)
            return model(x)
    return run


def train_fn(model, x: torch.Tensor, target: torch.Tensor, variant: Variant, device: torch.device):
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    amp_dtype = DTYPES[variant.dtype]
    use_amp = amp_dtype != torch.float32
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)

    def step():
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=use_amp):
            out = model(x)
        loss = F.l1_loss(out.float(), target)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        return loss
    return step, optimizer


def error_text(error: BaseException) -> str:
    return 'out of memory' if is_out_of_memory(error) else f'{type(error).__name__}: {error}'[:160]


def prepare(args, config: dict, result: Result, variant: Variant, device: torch.device):
    """The call to time for one variant, and the bytes of its tensors that stay alive between calls."""
    train = result.mode == 'train'
    model = build_model(config, variant, device, train)
    dtype = torch.float32 if train else DTYPES[variant.dtype]
    gen = torch.Generator().manual_seed(1)
    size = result.size
    x = torch.rand(args.batch, config['in_chans'], size, size, generator=gen).to(device, dtype)
    if not train:
        fn = forward_fn(model, x, result.mode, args.scale, config['window_size'], args.tile, args.tile_pad)
        return fn, lambda: tensor_bytes([*model.parameters(), *model.buffers(), x])
    target = torch.rand(args.batch, config['in_chans'], size * args.scale, size * args.scale, generator=gen)
    target = target.to(device)
    fn, optimizer = train_fn(model, x, target, variant, device)

    def resident() -> int:
        state = [t for s in optimizer.state.values() for t in s.values()]
        return tensor_bytes([*model.parameters(), *model.buffers(), x, target, *state])
    return fn, resident


def run_group(args, name: str, size: int, mode: str, variants: list, device: torch.device,
              flops: dict, reference: dict) -> list:
    """Time every variant of one (model, size, mode) in interleaved rounds (one call of each per
    round), so a change of machine load during the run hits all variants alike."""
    config = preset_config(name, upscale=args.scale)
    train = mode == 'train'
    results, runners = [], []
    for variant in variants:
        result = Result(name, size, args.batch, mode, str(variant), scale=args.scale)
        results.append(result)
        try:
            fn, resident = prepare(args, config, result, variant, device)
            result.first_call_s = timed(fn, device)
            for _ in range(max(args.warmup - 1, 0)):
                fn()
            runners.append((result, fn, resident))
        except Exception as error:  # a failed or out-of-memory variant is a row, not the end of the run
            result.error = error_text(error)
    for _ in range(args.repeat):
        for result, fn, _ in runners:
            if result.error is None:
                try:
                    result.times_s.append(timed(fn, device, args.clock))
                except Exception as error:
                    result.error = error_text(error)
    for result, fn, resident in runners:
        if result.error is not None:
            continue
        try:
            peak, out = peak_memory_bytes(fn, device, resident())
            result.peak_mb = peak / 2 ** 20
            if not train:  # compared with the first forward of this model and size (whole or tiled)
                out = out.float()
                if (name, size) in reference:
                    result.max_abs_diff = (out - reference[name, size]).abs().max().item()
                else:
                    reference[name, size] = out
            if mode != 'tiled':  # tiles overlap: the whole-image count would understate the work
                if (name, size, train) not in flops:
                    flops[name, size, train] = count_flops(config, args.batch, size, train)
                result.flops = flops[name, size, train]
            result.peak_flops = args.peaks[Variant.parse(result.variant).dtype][0]
        except Exception as error:
            result.error = error_text(error)
    runners.clear()
    if device.type == 'cuda':
        torch.cuda.empty_cache()
    for result in results:
        status = result.error or f'{result.median_s * 1e3:.1f} ms'
        print(f'  {name} {size}x{size} b{args.batch} {mode} {result.variant}: {status}', flush=True)
    return results


def fmt(value: Optional[float], spec: str) -> str:
    return '-' if value is None else format(value, spec)


def print_table(results: list) -> None:
    header = ('model', 'size', 'b', 'mode', 'variant', 'median ms', 'spread ms', 'img/s', 'LR MP/s',
              'TFLOP/s', '% peak', 'peak MB', 'max|diff|', 'first s')
    rows = []
    for r in results:
        s = r.summary()
        if r.error:
            rows.append((r.model, str(r.size), str(r.batch), r.mode, r.variant, r.error))
            continue
        rows.append((
            r.model, str(r.size), str(r.batch), r.mode, r.variant,
            fmt(s['median_s'] * 1e3, '.1f'), f'{min(r.times_s) * 1e3:.1f}-{max(r.times_s) * 1e3:.1f}',
            fmt(s['images_per_s'], '.3g'), fmt(s['lr_megapixels_per_s'], '.4f'),
            fmt(s.get('tflops_per_s'), '.3f'),
            fmt(100 * s['fraction_of_peak'] if 'fraction_of_peak' in s else None, '.1f'),
            fmt(r.peak_mb, '.0f'), fmt(r.max_abs_diff, '.1e'), fmt(r.first_call_s, '.1f'),
        ))
    widths = [max(len(row[i]) for row in rows + [header] if i < len(row)) for i in range(len(header))]
    for row in [header] + rows:
        print('  '.join(cell.ljust(widths[i]) if i < 5 else cell.rjust(widths[i]) for i, cell in enumerate(row)))


def print_ratios(results: list) -> None:
    """Speed-up and memory of every variant relative to the first one of its (model, size, mode)."""
    groups: dict = {}
    for r in results:
        groups.setdefault((r.model, r.size, r.mode), []).append(r)
    print('\nratios (speed-up = baseline time / time; memory = peak / baseline peak):')
    for (model, size, mode), rows in groups.items():
        base = rows[0]
        if base.error:
            continue
        for r in rows[1:]:
            if r.error:
                continue
            memory = f', memory {r.peak_mb / base.peak_mb:.2f}x' if r.peak_mb and base.peak_mb else ''
            print(f'  {model} {size}x{size} {mode}: {r.variant} vs {base.variant}: '
                  f'{base.median_s / r.median_s:.2f}x faster{memory}')
    if any(r.mode == 'tiled' for r in results):
        for r in results:
            if r.mode != 'tiled' or r.error:
                continue
            whole = next((w for w in results if (w.model, w.size, w.variant, w.mode) == (r.model, r.size, r.variant,
                                                                                          'forward') and not w.error),
                         None)
            if whole:
                print(f'  {r.model} {r.size}x{r.size} {r.variant}: tiled vs whole: '
                      f'{whole.median_s / r.median_s:.2f}x the speed')


def markdown_table(results: list, env: dict, peaks: dict) -> str:
    """The results as the markdown table docs/benchmarks.md takes: one block per (model, size, mode),
    ratios against the block's first variant, and the machine and command it was measured with."""
    peak_text = ', '.join(f'{name} {peak / 1e9:.0f} GFLOP/s' for name, (peak, _) in peaks.items())
    lines = [f"Machine: {env['cpu']} ({env.get('cpu_family_model', '?')}; bf16 flags: "
             f"{' '.join(f for f in env.get('cpu_flags', []) if 'bf16' in f or 'amx' in f) or 'none'})"
             + (f", GPU {env['gpu']}" if 'gpu' in env else '')
             + f", torch {env['torch']}, commit `{env['commit']}`, {env['threads']} threads. "
             f"GEMM peaks: {peak_text}.",
             '', f"`{env['command']}`", '',
             '| model | LR size | batch | mode | variant | median | spread | LR MP/s | GFLOP/s '
             '| % of its dtype\'s GEMM peak | peak memory | speed vs first | memory vs first | max abs diff vs first |',
             '|---|---|---|---|---|---|---|---|---|---|---|---|---|---|']
    groups: dict = {}
    for r in results:
        groups.setdefault((r.model, r.size, r.mode), []).append(r)
    for (model, size, mode), rows in groups.items():
        base = rows[0]
        for r in rows:
            label = f'{model} x{r.scale}'
            if r.error:
                lines.append(f'| {label} | {size}x{size} | {r.batch} | {mode} | {r.variant} | {r.error} |||||||||')
                continue
            s = r.summary()
            speed = f'{base.median_s / r.median_s:.2f}x' if not base.error else '-'
            memory = f'{r.peak_mb / base.peak_mb:.2f}x' if r.peak_mb and base.peak_mb and not base.error else '-'
            lines.append(
                f'| {label} | {size}x{size} | {r.batch} | {mode} | {r.variant} | {duration(s["median_s"])} '
                f'| {spread(r.times_s)} | {fmt(s["lr_megapixels_per_s"], ".4f")} '
                f'| {fmt(s["tflops_per_s"] * 1e3 if "tflops_per_s" in s else None, ".0f")} '
                f'| {fmt(100 * s["fraction_of_peak"] if "fraction_of_peak" in s else None, ".0f")} % '
                f'| {fmt(r.peak_mb, ".0f")} MB | {speed} | {memory} | {fmt(r.max_abs_diff, ".1e")} |')
    return '\n'.join(lines) + '\n'


def duration(seconds: float) -> str:
    return f'{seconds:.2f} s' if seconds >= 10 else f'{seconds * 1e3:.0f} ms'


def spread(times: list) -> str:
    low, high = min(times), max(times)
    return f'{low:.2f}-{high:.2f} s' if high >= 10 else f'{low * 1e3:.0f}-{high * 1e3:.0f} ms'


def default_variants(device: torch.device, mode: str) -> list:
    """Forward: the original formulation first (the baseline), then this project's paths."""
    if device.type == 'cuda':
        specs = ['original:fp32', 'explicit:fp32', 'fused:fp32', 'fused:bf16', 'fused:fp16', 'fused:bf16:compile']
        if mode == 'train':
            specs = ['fused:fp32', 'fused:bf16', 'fused:fp16', 'fused:bf16:ckpt']
    elif mode == 'train':
        specs = ['explicit:fp32', 'fused:fp32', 'fused:bf16', 'fused:fp32:ckpt']
    else:
        specs = ['original:fp32', 'explicit:fp32', 'fused:fp32', 'fused:bf16']
    return [Variant.parse(s) for s in specs]


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--models', nargs='+', default=['HAT-S', 'HAT', 'HAT-L'], help='HAT-S, HAT and/or HAT-L')
    parser.add_argument('--scale', type=int, default=4, help='upscale factor (default 4)')
    parser.add_argument('--sizes', nargs='+', type=int, default=[64, 256], help='square LR input sides')
    parser.add_argument('--batch', type=int, default=1)
    parser.add_argument('--modes', nargs='+', choices=MODES, default=['forward', 'train'])
    parser.add_argument('--variants', nargs='+', type=Variant.parse, default=None,
                        help='attention:dtype[:compile][:ckpt] ... (default depends on device and mode); '
                             'the first is the baseline of the ratios')
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--threads', type=int, default=None, help='CPU threads (torch.set_num_threads)')
    parser.add_argument('--clock', choices=sorted(CLOCKS), default='wall',
                        help='wall time, or the process CPU time (steadier on a shared CPU with --threads 1)')
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument('--repeat', type=int, default=5)
    parser.add_argument('--tile', type=int, default=128, help='tile size of the tiled mode')
    parser.add_argument('--tile-pad', type=int, default=32, help='tile context of the tiled mode')
    parser.add_argument('--peak-tflops', type=float, default=None,
                        help='device peak for the %% peak column, all dtypes (default: a measured GEMM in '
                             'the dtype of each row)')
    parser.add_argument('--json', type=Path, default=None,
                        help='also write every figure to this JSON file (rewritten after each group)')
    parser.add_argument('--markdown', type=Path, default=None,
                        help='also write the table docs/benchmarks.md takes to this file')
    args = parser.parse_args(argv)
    for name in args.models:
        preset_config(name)  # raises a clear error for unknown names
    if args.batch < 1 or args.repeat < 1 or any(s < 1 for s in args.sizes):
        parser.error('--batch, --repeat and --sizes must be positive')
    if args.clock == 'process' and args.device != 'cpu':
        parser.error('--clock process measures CPU time: use it with --device cpu')
    return args


def main(argv=None) -> list:
    args = parse_args(argv)
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    env = describe(device, torch.get_num_threads())
    env['command'] = ' '.join(['python', *sys.argv]) if argv is None else ' '.join(['bench_hat.py', *argv])
    print(header(env))
    results, flops, reference = [], {}, {}
    all_variants = {str(v): v for mode in args.modes for v in (args.variants or default_variants(device, mode))}
    dtype_names = dict.fromkeys(v.dtype for v in all_variants.values())
    args.peaks = {name: device_peak(device, name, args.peak_tflops, args.clock) for name in dtype_names}
    fp32_peak = args.peaks['fp32'][0] if 'fp32' in args.peaks else None
    for dtype_name, (peak, source) in args.peaks.items():
        versus = f', {peak / fp32_peak:.2f}x fp32' if fp32_peak and dtype_name != 'fp32' else ''
        print(f'peak {dtype_name}: {peak / 1e12:.3f} TFLOP/s ({source}{versus})')
    for name in args.models:
        for size in args.sizes:
            for mode in args.modes:
                # checkpointing only changes training
                variants = [v for v in args.variants or default_variants(device, mode)
                            if mode == 'train' or not v.checkpoint]
                results += run_group(args, name, size, mode, variants, device, flops, reference)
                if args.json:
                    write_json(args.json, env, args.peaks, results)
    print()
    print_table(results)
    print_ratios(results)
    if args.markdown:
        args.markdown.write_text(markdown_table(results, env, args.peaks))
    return results


def write_json(path: Path, env: dict, peaks: dict, results: list) -> None:
    payload = {'environment': env, 'peaks_tflops': {k: v[0] / 1e12 for k, v in peaks.items()},
               'peak_sources': {k: v[1] for k, v in peaks.items()}, 'results': [r.summary() for r in results]}
    path.write_text(json.dumps(payload, indent=2))


if __name__ == '__main__':
    main()
