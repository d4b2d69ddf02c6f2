"""Regenerate docs/results_example/ (the table and figure in README.md and docs/results.md) from the bundled demo.

    python docs/make_results_example.py [--workdir DIR]

Trains the demo's tiny HAT x2 (options/train/HAT-tiny_SRx2_demo.yml, 1000 iterations, CPU in minutes)
with checkpoints every 250 iterations, tests the weights after 250 and after 1000 iterations on the held-out
photos (demo/photos/val) with hat/test.py, then writes ``table.md`` (``python -m hat.report --bicubic``) and
``figure.png`` (``python -m hat.report.figure``, automatic box) into docs/results_example/.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / 'docs' / 'results_example'
DEMO = REPO / 'options' / 'train' / 'HAT-tiny_SRx2_demo.yml'
#: The two test runs compared: run name -> training iteration of its weights.
RUNS = {'tiny-HAT_250it': 250, 'tiny-HAT_1000it': 1000}
FIGURE_IMAGE = 'chelsea'


def hat_command(script: str, root: Path, *args: str) -> None:
    """Run hat/train.py or hat/test.py with ``root`` as the project root (experiments/, results/ go there)."""
    code = f'import sys; from hat.{script} import main; main(sys.argv.pop(1))'
    subprocess.run([sys.executable, '-c', code, str(root), *args], cwd=root, check=True)


def write_options(opt: dict, path: Path) -> str:
    path.write_text(yaml.safe_dump(opt, sort_keys=False))
    return str(path)


def train(root: Path) -> Path:
    """Train the demo recipe, saving weights every 250 iterations; returns the models folder."""
    opt = yaml.safe_load(DEMO.read_text())
    opt['name'] = 'demo'
    for phase in ('train', 'val'):
        opt['datasets'][phase]['dataroot_gt'] = str(REPO / opt['datasets'][phase]['dataroot_gt'])
    opt['logger']['save_checkpoint_freq'] = 250
    hat_command('train', root, '-opt', write_options(opt, root / 'train.yml'))
    return root / 'experiments' / 'demo' / 'models'


def test(root: Path, models: Path) -> list[Path]:
    """Test each compared checkpoint on the held-out photos, saving the SR images; returns the results folders."""
    demo = yaml.safe_load(DEMO.read_text())
    folders = []
    for name, iteration in RUNS.items():
        opt = dict(name=name, model_type='HATModel', scale=demo['scale'], num_gpu=0, manual_seed=0,
                   datasets={'test_1': dict(name='demo_val', type='HROnlyDataset',
                                            dataroot_gt=str(REPO / 'demo' / 'photos' / 'val'),
                                            io_backend=dict(type='disk'))},
                   network_g=demo['network_g'],
                   path=dict(pretrain_network_g=str(models / f'net_g_{iteration}.pth'), strict_load_g=True),
                   val=dict(save_img=True, suffix=None, metrics=demo['val']['metrics']))
        hat_command('test', root, '-opt', write_options(opt, root / f'{name}.yml'))
        folders.append(root / 'results' / name)
    return folders


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--workdir', type=Path, help='keep the runs here (default: a temporary folder)')
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        root = args.workdir or Path(scratch)
        root.mkdir(parents=True, exist_ok=True)
        results = test(root, train(root))
        OUT.mkdir(exist_ok=True)
        table = subprocess.run([sys.executable, '-m', 'hat.report', '--bicubic', *map(str, results)], check=True,
                               capture_output=True, text=True).stdout
        (OUT / 'table.md').write_text(table)
        subprocess.run([sys.executable, '-m', 'hat.report.figure', *map(str, results), '--image', FIGURE_IMAGE,
                        '--dataset', 'demo_val', '--width', '720', '-o', str(OUT / 'figure.png'), '--overwrite'],
                       check=True)
    print(table)


if __name__ == '__main__':
    main()
