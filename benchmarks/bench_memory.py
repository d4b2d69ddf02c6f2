"""Peak memory of whole-image HAT inference: this project against the original formulation.

Each (case, variant) is measured in its own fresh Python process, so one measurement's
allocator state (glibc arenas, PyTorch's CUDA cache, cached masks) cannot leak into the next;
this script starts them one after the other and prints the figures and their ratios to the
first variant (by default ``original:fp32``, the authors' formulation from
``benchmarks/original_hat.py`` with the same weights). A case is ``MODEL:SCALE:LR_SIZE``.

What one worker measures, after building the model and one small warm-up forward:

- CPU, resident: the peak resident set size during one whole-image forward (``VmHWM`` after
  resetting it through ``/proc/self/clear_refs``) minus the resident size just before it:
  what the forward adds to the process, as the operating system sees it.
- CPU, allocator: the peak of the running total of the allocations and frees PyTorch's
  profiler records during a second forward (what tensors need, without malloc's slack).
- CUDA: ``torch.cuda.max_memory_allocated`` during the forward minus what was allocated
  before it, plus the total peak and ``max_memory_reserved``.

Outputs are compared across variants (max abs difference to the first one), so every row is
known to compute the same image.

Examples::

    python benchmarks/bench_memory.py                                   # CPU, default cases
    python benchmarks/bench_memory.py --device cuda --cases HAT:4:256 HAT:4:512 HAT-L:2:256
    python benchmarks/bench_memory.py --variants original:fp32 fused:fp32 fused:bf16 --json mem.json
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

import torch
from bench_env import describe, header
from bench_hat import DTYPES, Variant, build_model, profiler_peak_bytes

import hat
from hat.archs.hat_presets import preset_config

DEFAULT_CASES = ('HAT:4:128', 'HAT:4:256', 'HAT-L:2:256')
MB = 2 ** 20


def parse_case(spec: str) -> tuple[str, int, int]:
    try:
        model, scale, size = spec.split(':')
        preset_config(model)
        return model, int(scale), int(size)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f'bad case {spec!r}: write MODEL:SCALE:LR_SIZE, e.g. HAT:4:256 '
                                         f'({error})') from None


def proc_status_bytes(field: str) -> int:
    """A ``kB`` field of /proc/self/status (VmRSS, VmHWM) in bytes."""
    for line in Path('/proc/self/status').read_text().splitlines():
        if line.startswith(field + ':'):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current resident size (Linux >= 4.0); False where that is not possible."""
    try:
        Path('/proc/self/clear_refs').write_text('5')
        return True
    except OSError:
        return False


def measure(spec: dict) -> dict:
    """One worker: build, warm up, then measure one whole-image forward (see the module docstring)."""
    device = torch.device(spec['device'])
    torch.set_num_threads(spec['threads'])
    variant = Variant.parse(spec['variant'])
    config = preset_config(spec['model'], upscale=spec['scale'])
    model = build_model(config, variant, device, train=False)
    dtype = DTYPES[variant.dtype]
    gen = torch.Generator().manual_seed(1)
    size = spec['size']
    with torch.inference_mode():
        warm = spec['warmup_size']
        model(torch.rand(1, config['in_chans'], warm, warm, generator=gen).to(device, dtype))
        x = torch.rand(1, config['in_chans'], size, size, generator=gen).to(device, dtype)
    row = {'weights_mb': sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()]) / MB,
           'input_mb': x.numel() * x.element_size() / MB}
    gc.collect()
    if device.type == 'cuda':
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        start = time.perf_counter()
        with torch.inference_mode():
            out = model(x)
        torch.cuda.synchronize(device)
        row.update(seconds=time.perf_counter() - start,
                   allocator_added_mb=(torch.cuda.max_memory_allocated(device) - before) / MB,
                   allocator_total_mb=torch.cuda.max_memory_allocated(device) / MB,
                   reserved_total_mb=torch.cuda.max_memory_reserved(device) / MB)
    else:
        rss_before = proc_status_bytes('VmRSS')
        exact = reset_peak_rss()
        start, cpu_start = time.perf_counter(), time.process_time()
        with torch.inference_mode():
            out = model(x)
        row.update(seconds=time.perf_counter() - start, cpu_seconds=time.process_time() - cpu_start)
        if exact:
            row['rss_added_mb'] = (proc_status_bytes('VmHWM') - rss_before) / MB
        if spec['allocator']:
            del out
            gc.collect()
            activities = [torch.profiler.ProfilerActivity.CPU]
            with torch.profiler.profile(activities=activities, profile_memory=True) as prof, torch.inference_mode():
                out = model(x)
            row['allocator_added_mb'] = profiler_peak_bytes(prof) / MB
            row['allocator_total_mb'] = row['allocator_added_mb'] + row['weights_mb'] + row['input_mb']
    torch.save(out.float().cpu(), spec['output'])
    return row


def run_worker(spec: dict, env: dict) -> dict:
    """Measure ``spec`` in a fresh interpreter; the worker's last stdout line is its JSON row."""
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), '--worker', json.dumps(spec)],
                          capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        lines = (proc.stderr.strip() or proc.stdout.strip() or 'no output').splitlines()
        killed = proc.returncode < 0 or proc.returncode == 137
        return {'error': 'out of memory or killed' if killed else lines[-1][:200]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def worker_environment(threads: int) -> dict:
    """The workers import this ``hat`` (not another install) and use ``threads`` threads."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    root = str(Path(hat.__file__).resolve().parents[1])
    env['PYTHONPATH'] = os.pathsep.join([root, *filter(None, [env.get('PYTHONPATH')])])
    return env


def fmt(value: Optional[float], spec: str = '.0f', unit: str = '') -> str:
    return '-' if value is None else format(value, spec) + unit


def forward_seconds(row: dict) -> Optional[float]:
    """The forward's CPU time on CPU (steady on a shared machine), its wall time on CUDA."""
    return row.get('cpu_seconds', row.get('seconds'))


def memory_key(device: str) -> str:
    """The figure the ratios compare: resident memory on CPU, the allocator's on CUDA."""
    return 'allocator_added_mb' if device == 'cuda' else 'rss_added_mb'


def print_rows(rows: list) -> None:
    print(f"\n{'case':<20}{'variant':<22}{'RSS added':>12}{'allocator added':>17}{'weights':>10}"
          f"{'forward':>10}{'max|diff|':>11}")
    for row in rows:
        print(f"{row['case']:<20}{row['variant']:<22}{fmt(row.get('rss_added_mb'), '.0f', ' MB'):>12}"
              f"{fmt(row.get('allocator_added_mb'), '.0f', ' MB'):>17}{fmt(row.get('weights_mb'), '.0f', ' MB'):>10}"
              f"{fmt(forward_seconds(row), '.2f', ' s'):>10}{fmt(row.get('max_abs_diff'), '.1e'):>11}"
              + (f"  {row['error']}" if 'error' in row else ''))
    print('\nratios (peak memory added by the forward / that of the first variant of the case):')
    for row in rows:
        ratios = [f"{name} {row[key]:.2f}x" for key, name in (('rss_ratio', 'resident'), ('allocator_ratio',
                                                                                          'allocator')) if key in row]
        if ratios and row['variant'] != row['baseline']:
            print(f"  {row['case']} {row['variant']} vs {row['baseline']}: {', '.join(ratios)}")


def markdown_table(rows: list, env: dict) -> str:
    """The table docs/benchmarks.md takes, with the machine and command it was measured with."""
    lines = [f"Machine: {env['cpu']} ({env.get('cpu_family_model', '?')})"
             + (f", GPU {env['gpu']}" if 'gpu' in env else '')
             + f", torch {env['torch']}, commit `{env['commit']}`, {env['threads']} threads, "
             f"each row in its own process.", '', f"`{env['command']}`", '',
             '| case (LR size) | variant | peak RSS added | vs first | allocator peak added | vs first '
             '| weights | forward time (CPU time on CPU) | max abs diff vs first |',
             '|---|---|---|---|---|---|---|---|---|']
    for row in rows:
        if 'error' in row:
            lines.append(f"| {row['case']} | {row['variant']} | {row['error']} |||||||")
            continue
        lines.append(
            f"| {row['case']} | {row['variant']} | {fmt(row.get('rss_added_mb'), '.0f', ' MB')} "
            f"| {fmt(row.get('rss_ratio'), '.2f', 'x')} | {fmt(row.get('allocator_added_mb'), '.0f', ' MB')} "
            f"| {fmt(row.get('allocator_ratio'), '.2f', 'x')} | {fmt(row.get('weights_mb'), '.0f', ' MB')} "
            f"| {fmt(forward_seconds(row), '.1f', ' s')} | {fmt(row.get('max_abs_diff'), '.1e')} |")
    return '\n'.join(lines) + '\n'


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--cases', nargs='+', type=parse_case, default=[parse_case(c) for c in DEFAULT_CASES],
                        help=f'MODEL:SCALE:LR_SIZE ... (default {" ".join(DEFAULT_CASES)})')
    parser.add_argument('--variants', nargs='+', type=Variant.parse,
                        default=[Variant.parse('original:fp32'), Variant.parse('fused:fp32')],
                        help='attention:dtype[:compile] as in bench_hat.py; the first is the baseline of the ratios '
                             '(default original:fp32 fused:fp32)')
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--threads', type=int, default=1, help='CPU threads of each worker (default 1)')
    parser.add_argument('--warmup-size', type=int, default=16, help='side of the warm-up input (default 16)')
    parser.add_argument('--no-allocator', dest='allocator', action='store_false',
                        help="CPU: skip the profiled second forward (the allocator's view); halves the run time")
    parser.add_argument('--json', type=Path, default=None, help='also write the rows to this JSON file')
    parser.add_argument('--markdown', type=Path, default=None, help='also write the markdown table to this file')
    parser.add_argument('--worker', default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if any(v.checkpoint for v in args.variants):
        parser.error('checkpointing only changes training; drop :ckpt')
    if args.threads < 1 or args.warmup_size < 1:
        parser.error('--threads and --warmup-size must be positive')
    return args


def main(argv=None) -> list:
    args = parse_args(argv)
    if args.worker:
        print(json.dumps(measure(json.loads(args.worker))))
        return []
    info = describe(torch.device(args.device), args.threads)
    info['command'] = ' '.join(['python', *sys.argv]) if argv is None else ' '.join(['bench_memory.py', *argv])
    print(header(info), flush=True)
    env = worker_environment(args.threads)
    rows = []
    key = memory_key(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        for model, scale, size in args.cases:
            case_rows, first_output = [], None
            for variant in args.variants:
                spec = dict(model=model, scale=scale, size=size, variant=str(variant), device=args.device,
                            threads=args.threads, warmup_size=args.warmup_size, allocator=args.allocator,
                            output=str(Path(tmp) / 'out.pt'))
                row = {'case': f'{model} x{scale} {size}x{size}', 'variant': str(variant),
                       'baseline': str(args.variants[0]), **run_worker(spec, env)}
                if 'error' not in row:
                    output = torch.load(spec['output'], weights_only=True)
                    if first_output is None:
                        first_output = output
                    else:
                        row['max_abs_diff'] = (output - first_output).abs().max().item()
                case_rows.append(row)
                print(f"  {row['case']} {row['variant']}: "
                      + (row['error'] if 'error' in row else f"{fmt(row.get(key), '.0f', ' MB')} added"), flush=True)
            base = case_rows[0]
            for row in case_rows:
                for figure, ratio in (('rss_added_mb', 'rss_ratio'), ('allocator_added_mb', 'allocator_ratio')):
                    if row.get(figure) and base.get(figure):
                        row[ratio] = row[figure] / base[figure]
            rows += case_rows
            if args.json:
                args.json.write_text(json.dumps({'environment': info, 'rows': rows}, indent=2))
    print_rows(rows)
    if args.markdown:
        args.markdown.write_text(markdown_table(rows, info))
    return rows


if __name__ == '__main__':
    main()
