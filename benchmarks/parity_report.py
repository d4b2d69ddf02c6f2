"""Print the max abs difference to every reference output, for both attention paths.

Usage: python benchmarks/parity_report.py  (float64, CPU; the numbers go to docs/architecture.md)
"""
import importlib.util
import platform
from pathlib import Path

import torch

from hat import HAT

REFERENCE_DIR = Path(__file__).resolve().parents[1] / 'tests' / 'data' / 'reference'


def load_recipe():
    spec = importlib.util.spec_from_file_location('synth_weights', REFERENCE_DIR / 'synth_weights.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    recipe = load_recipe()
    print(f'torch {torch.__version__}, {platform.processor() or platform.machine()}, float64')
    print(f'{"case":<20}{"explicit":>12}{"fused":>12}')
    for path in sorted((REFERENCE_DIR / 'parity').glob('*.pt')):
        case = torch.load(path, weights_only=True)
        model = HAT(**case['config']).double().eval()
        model.load_state_dict(recipe.synth_state_dict(model.state_dict(), case['seed']), strict=True)
        diffs = []
        for fused in (False, True):
            model.set_fused_attention(fused)
            with torch.no_grad():
                diffs.append((model(case['input']) - case['output']).abs().max().item())
        print(f'{path.stem:<20}{diffs[0]:>12.1e}{diffs[1]:>12.1e}')


if __name__ == '__main__':
    main()
