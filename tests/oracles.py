"""Reference constructions used only by tests (kept out of the package)."""
import torch

from hat.archs.hat_arch import SHIFT_MASK_VALUE, window_partition


def shifted_window_mask(h: int, w: int, window_size: int, shift_size: int, dtype=torch.float32) -> torch.Tensor:
    """The full mask ``(num_windows, ws*ws, ws*ws)`` of shifted windows on an ``h x w`` map, window by
    window: 0 within a region, -100 across (what ``hat_arch.shifted_window_masks`` condenses to 3 kinds)."""

    def region(n: int) -> torch.Tensor:
        pos = torch.arange(n)
        return (pos >= n - window_size).long() + (pos >= n - shift_size).long()

    ids = (region(h)[:, None] * 3 + region(w)[None, :]).view(1, h, w, 1)
    ids = window_partition(ids, window_size).view(-1, window_size * window_size)
    different = ids[:, None, :] != ids[:, :, None]
    return torch.zeros(different.shape, dtype=dtype).masked_fill_(different, SHIFT_MASK_VALUE)


#: Parameter counts of the published layouts (from the original implementation).
PUBLISHED_NUM_PARAMS: dict[str, int] = {
    'HAT-S_SRx2': 9_473_471, 'HAT-S_SRx3': 9_658_111, 'HAT-S_SRx4': 9_621_183,
    'HAT_SRx2': 20_624_795, 'HAT_SRx3': 20_809_435, 'HAT_SRx4': 20_772_507,
    'HAT-L_SRx2': 40_698_863, 'HAT-L_SRx3': 40_883_503, 'HAT-L_SRx4': 40_846_575,
}
