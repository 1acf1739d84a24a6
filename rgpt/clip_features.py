"""CLIP features of regions and texts, in CLIP's joint space.

One place for what three jobs share: RecapD's filter scores regions against their captions
(`rgpt.recap.clip_filter`), the evaluation maps off-vocabulary answers to the nearest category
name (`rgpt.eval.benchmarks.nearest_names`), and the embedded profile trains its CLIP on regions
(`rgpt.embedded.clip`). Any transformers `CLIPModel` works: the embedded one or ViT-L/14-336.
"""

from __future__ import annotations

from typing import Sequence

import torch
from PIL import Image
from transformers import CLIPModel, PreTrainedTokenizerBase

from .model import regions
from .model.image import to_pixel_values


def region_features(model: CLIPModel, images: Sequence[Image.Image], masks: Sequence[torch.Tensor],
                    layer: int) -> torch.Tensor:
    """(R, P): every region's embedding, the way RGPT sees a region: the mean of the tower's patch
    features (hidden layer `layer`) of the whole image inside the region's mask, then CLIP's final
    norm and projection. masks[i]: (R_i, S, S) the regions of images[i] on the tower's square input
    canvas (`processing_rgpt.region_masks`); the rows come out image by image."""
    config = model.config.vision_config
    grid = config.image_size // config.patch_size
    pixel_values = to_pixel_values(list(images), config.image_size).to(model.device)
    hidden = model.vision_model(pixel_values=pixel_values, output_hidden_states=True).hidden_states[layer]
    patches = hidden[:, 1:].transpose(1, 2).reshape(len(images), config.hidden_size, grid, grid)  # (B, D, g, g)
    image_index = torch.cat([torch.full((len(m),), i) for i, m in enumerate(masks)]).to(model.device)  # (R,)
    weights = regions.resize(torch.cat(list(masks)), grid).to(model.device)  # (R, g, g)
    pooled = regions.mask_pool(patches, weights, image_index)  # (R, D)
    return model.visual_projection(model.vision_model.post_layernorm(pooled))


def image_features(model: CLIPModel, images: Sequence[Image.Image]) -> torch.Tensor:
    """(B, P): CLIP's own embedding of each whole picture (a region's crop, the paper's filter)."""
    size = model.config.vision_config.image_size
    out = model.get_image_features(pixel_values=to_pixel_values(list(images), size).to(model.device))
    return getattr(out, "pooler_output", out)


def text_features(model: CLIPModel, tokenizer: PreTrainedTokenizerBase, texts: Sequence[str]) -> torch.Tensor:
    """(T, P): each text's embedding, truncated to the tokenizer's window."""
    tokens = tokenizer(list(texts), padding=True, truncation=True, return_tensors="pt").to(model.device)
    out = model.get_text_features(**tokens)
    return getattr(out, "pooler_output", out)
