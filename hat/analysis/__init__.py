"""Analysis of SR networks: Local Attribution Maps and the diffusion index (``hat-lam``), per-group feature maps."""
from hat.analysis.lam import (
    AttributionError,
    LAMResult,
    blur_path,
    diffusion_index,
    gini,
    local_attribution_map,
    window_objective,
)

__all__ = ['AttributionError', 'LAMResult', 'blur_path', 'diffusion_index', 'gini', 'local_attribution_map',
           'window_objective']
