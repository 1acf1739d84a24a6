"""Region masks on the model side: box conversion, dilation/erosion, resizing and mask pooling.

Masks arrive at the model's input resolution, one per `<region>`, as a float tensor (R, S, S),
with `image_index` (R,) naming the image of the batch each belongs to (non-decreasing). They are
resized to the refined feature map by area averaging, so a region too small to cover one cell
still weighs on the cells it touches and gets a feature: nothing vanishes on downsampling.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def box_masks(masks: torch.Tensor) -> torch.Tensor:
    """Each mask's filled bounding box (paper Tables 15-16: 'box' region input)."""
    rows = masks.amax(dim=2) > 0  # (R, S) rows the mask touches
    cols = masks.amax(dim=1) > 0  # (R, S)

    def span(hit: torch.Tensor) -> torch.Tensor:  # fill between the first and last hit
        idx = torch.arange(hit.shape[1], device=hit.device).expand_as(hit)
        first = torch.where(hit, idx, hit.shape[1]).amin(dim=1, keepdim=True)
        last = torch.where(hit, idx, -1).amax(dim=1, keepdim=True)
        return (idx >= first) & (idx <= last)  # (R, S)

    return (span(rows)[:, :, None] & span(cols)[:, None, :]).to(masks.dtype)  # (R, S, S)


def morphology(masks: torch.Tensor, kernel: int) -> torch.Tensor:
    """Dilate (kernel > 0) or erode (kernel < 0) binary masks with a square kernel.

    An erosion that would empty a mask keeps the original instead: a region never disappears.
    """
    if kernel == 0:
        return masks
    k = abs(kernel)
    pool = lambda m: F.max_pool2d(m[:, None], k, stride=1, padding=k // 2)[:, 0, : m.shape[1], : m.shape[2]]  # noqa: E731
    if kernel > 0:
        return pool(masks)
    eroded = 1 - pool(1 - masks)
    empty = eroded.flatten(1).amax(dim=1) == 0  # (R,)
    return torch.where(empty[:, None, None], masks, eroded)


def resize(masks: torch.Tensor, size: int) -> torch.Tensor:
    """(R, S, S) -> (R, size, size): the share of each output cell a mask covers (area average)."""
    if masks.shape[-1] == size:
        return masks
    if masks.shape[-1] > size:
        return F.adaptive_avg_pool2d(masks[:, None], size)[:, 0]
    return F.interpolate(masks[:, None], size=(size, size), mode="nearest")[:, 0]


def mask_pool(features: torch.Tensor, weights: torch.Tensor, image_index: torch.Tensor) -> torch.Tensor:
    """Mean feature inside each region: sum(w * f) / sum(w) over the map (paper Sec. 3.1).

    features: (B, C, h, w); weights: (R, h, w) >= 0; image_index: (R,) non-decreasing.
    One batched matmul over regions padded per image: no Python loop over regions and no
    (R, C, h, w) intermediate.
    """
    B, C, h, w = features.shape
    R = weights.shape[0]
    if R == 0:
        return features.new_zeros(0, C)
    counts = torch.bincount(image_index, minlength=B)  # (B,) regions per image
    starts = torch.cumsum(counts, 0) - counts  # (B,) first region of each image
    slot = torch.arange(R, device=features.device) - starts[image_index]  # (R,) position in its image
    padded = features.new_zeros(B, int(counts.max()), h * w)  # (B, Rmax, h*w)
    padded[image_index, slot] = weights.flatten(1).to(features.dtype)
    sums = torch.bmm(padded, features.flatten(2).transpose(1, 2))  # (B, Rmax, C)
    area = weights.flatten(1).sum(dim=1, keepdim=True).clamp_min(1e-6).to(features.dtype)  # (R, 1)
    return sums[image_index, slot] / area  # (R, C)
