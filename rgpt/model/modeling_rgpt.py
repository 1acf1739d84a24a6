"""RGPT (paper Sec. 3.1): CLIP features refined 4x, regions mask-pooled, one connector, an LLM.

    pixel_values (B, 3, S, S) ──CLIP──> Z (B, C, g, g) ──refinement──> Z_hres (B, C, 4g, 4g)
        ├─ adaptive pool to (H, W) ──connector──> image tokens (B, H*W, D)   fill the <image> slots
        └─ mask pooling over each region ──connector──> region embeddings (R, D)   fill <region> slots
    text embeddings with both filled in ──LLM──> logits, loss on the assistant's answers

`<image>` is expanded by the processor into H*W image-token ids; each `<region>` is one token.
Regions come as masks at the input resolution (R, S, S) with the batch index of their image.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModelForCausalLM, CLIPVisionModel, PreTrainedModel, PreTrainedTokenizerBase
from transformers.activations import ACT2FN
from transformers.modeling_outputs import CausalLMOutputWithPast
from transformers.utils import logging as hf_logging

from ..data.templates import IMAGE, REGION
from . import regions
from .configuration_rgpt import RGPTConfig

IGNORE_INDEX = -100  # labels that carry no loss (prompt, padding): PyTorch's and Hugging Face's value


class FeatureRefinement(nn.Module):
    """Raise the resolution of the tower's map: two stride-2 transposed convolutions (4x), or the
    ablations of Table 6 (bilinear 16x, deconv then bilinear 16x, none)."""

    def __init__(self, channels: int, variant: str):
        super().__init__()
        self.variant = variant
        if variant in ("deconv", "deconv_bilinear"):
            self.deconv = nn.Sequential(
                nn.ConvTranspose2d(channels, channels, kernel_size=2, stride=2),
                nn.GELU(),
                nn.ConvTranspose2d(channels, channels, kernel_size=2, stride=2),
            )

    def forward(self, z: torch.Tensor) -> torch.Tensor:  # (B, C, g, g) -> (B, C, kg, kg)
        if self.variant in ("deconv", "deconv_bilinear"):
            z = self.deconv(z)  # (B, C, 4g, 4g)
        if self.variant == "bilinear":
            z = F.interpolate(z, scale_factor=16, mode="bilinear", align_corners=False)
        elif self.variant == "deconv_bilinear":
            z = F.interpolate(z, scale_factor=4, mode="bilinear", align_corners=False)
        return z


class Connector(nn.Module):
    """The 2-layer MLP shared by image and region features (Sec. 3.1), into the LLM's space."""

    def __init__(self, vision_size: int, text_size: int, act: str):
        super().__init__()
        self.fc1 = nn.Linear(vision_size, text_size)
        self.act = ACT2FN[act]
        self.fc2 = nn.Linear(text_size, text_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., C) -> (..., D)
        return self.fc2(self.act(self.fc1(x)))


class RGPTPreTrainedModel(PreTrainedModel):
    config_class = RGPTConfig
    config: RGPTConfig
    base_model_prefix = ""
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _no_split_modules = ["CLIPEncoderLayer", "LlamaDecoderLayer"]

    def _init_weights(self, module: nn.Module) -> None:
        # The towers are initialised by their own classes (and then loaded from checkpoints).
        if isinstance(module, (nn.Linear, nn.ConvTranspose2d)):
            nn.init.normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)


class RGPTForConditionalGeneration(RGPTPreTrainedModel):
    def __init__(self, config: RGPTConfig):
        super().__init__(config)
        self.vision_tower = CLIPVisionModel(config.vision_config)
        channels = config.vision_config.hidden_size
        self.refinement = FeatureRefinement(channels, config.refinement)
        self.connector = Connector(channels, config.text_config.hidden_size, config.projector_hidden_act)
        self.language_model = AutoModelForCausalLM.from_config(config.text_config)
        self.post_init()

    # ------------------------------------------------------------------ building from base models

    @classmethod
    def from_base_models(cls, clip_path: str | Path, llm_path: str | Path, tokenizer: PreTrainedTokenizerBase,
                         **config_kwargs) -> RGPTForConditionalGeneration:
        """A fresh RGPT whose towers are the pretrained CLIP vision model and LLM at these paths."""
        for token in (IMAGE, REGION):
            if token not in tokenizer.get_vocab():
                raise ValueError(f"the tokenizer has no {token} token; add it as a special token first")
        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()  # a CLIP checkpoint also holds the text tower we leave out
        try:
            vision = CLIPVisionModel.from_pretrained(clip_path)
        finally:
            hf_logging.set_verbosity(verbosity)
        llm = AutoModelForCausalLM.from_pretrained(llm_path)
        if llm.get_input_embeddings().num_embeddings < len(tokenizer):
            llm.resize_token_embeddings(len(tokenizer))  # the hub LLM lacks <image>/<region>
        config = RGPTConfig(vision_config=vision.config, text_config=llm.config,
                            image_token_id=tokenizer.convert_tokens_to_ids(IMAGE),
                            region_token_id=tokenizer.convert_tokens_to_ids(REGION), **config_kwargs)
        model = cls(config)
        model.vision_tower.load_state_dict(vision.state_dict())
        model.language_model.load_state_dict(llm.state_dict())
        return model

    def get_input_embeddings(self) -> nn.Module:
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.language_model.set_input_embeddings(value)

    # --------------------------------------------------------------------------- the two branches

    def encode_images(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Image tokens (B, H*W, D) and the refined map (B, C, h, w) regions are pooled from."""
        out = self.vision_tower(pixel_values, output_hidden_states=True)
        patches = out.hidden_states[self.config.vision_feature_layer][:, 1:]  # (B, g*g, C) without CLS
        B, N, C = patches.shape
        g = self.config.grid_size
        z = patches.transpose(1, 2).reshape(B, C, g, g)  # (B, C, g, g): Z_LRes
        refined = self.refinement(z)  # (B, C, h, w): Z_HRes
        pooled = F.adaptive_avg_pool2d(refined, self.config.image_grid)  # (B, C, H, W)
        return self.connector(pooled.flatten(2).transpose(1, 2)), refined  # (B, H*W, D)

    def encode_regions(self, refined: torch.Tensor, masks: torch.Tensor, image_index: torch.Tensor) -> torch.Tensor:
        """One embedding per region (R, D): the mean refined feature inside its mask."""
        masks = masks.to(refined.dtype)  # (R, S, S)
        if self.config.region_input == "box":
            masks = regions.box_masks(masks)
        masks = regions.morphology(masks, self.config.mask_morphology)
        weights = regions.resize(masks, refined.shape[-1])  # (R, h, w) share of each cell covered
        return self.connector(regions.mask_pool(refined, weights, image_index))  # (R, D)

    def embed_multimodal(self, input_ids: torch.LongTensor, pixel_values: torch.Tensor | None = None,
                         region_masks: torch.Tensor | None = None,
                         region_image_index: torch.LongTensor | None = None) -> torch.Tensor:
        """Text embeddings (B, T, D) with image tokens and region embeddings put in their slots."""
        image_slots = input_ids == self.config.image_token_id  # (B, T)
        region_slots = input_ids == self.config.region_token_id  # (B, T)
        n_regions = 0 if region_masks is None else region_masks.shape[0]
        if int(region_slots.sum()) != n_regions:
            raise ValueError(f"the batch has {int(region_slots.sum())} {REGION} tokens but {n_regions} "
                             "region masks: every placeholder needs exactly one region, in order")
        if n_regions and (region_image_index is None or bool((region_image_index.diff() < 0).any())):
            raise ValueError("region_image_index must give each region's image, in non-decreasing order")
        embeds = self.get_input_embeddings()(input_ids)  # (B, T, D)
        if pixel_values is None:
            if image_slots.any() or n_regions:
                raise ValueError(f"{IMAGE} / {REGION} tokens in the batch but no pixel_values")
            return embeds
        image_features, refined = self.encode_images(pixel_values.to(embeds.dtype))
        has_image = image_slots.any(dim=1)  # (B,) text-only rows carry a dummy image
        expected = int(has_image.sum()) * self.config.num_image_tokens
        if int(image_slots.sum()) != expected:
            raise ValueError(f"the batch has {int(image_slots.sum())} image-token slots, expected {expected} "
                             f"({self.config.num_image_tokens} per {IMAGE}); expand it with RGPTProcessor")
        embeds = embeds.masked_scatter(image_slots[..., None], image_features[has_image].to(embeds.dtype))
        if n_regions:
            region_features = self.encode_regions(refined, region_masks, region_image_index)
            embeds = embeds.masked_scatter(region_slots[..., None], region_features.to(embeds.dtype))
        return embeds

    # ---------------------------------------------------------------------------- forward, generate

    def forward(self, input_ids: torch.LongTensor, attention_mask: torch.Tensor | None = None,
                pixel_values: torch.Tensor | None = None, region_masks: torch.Tensor | None = None,
                region_image_index: torch.LongTensor | None = None, labels: torch.LongTensor | None = None,
                label_weights: torch.Tensor | None = None, **kwargs) -> CausalLMOutputWithPast:
        """The LLM's output on the fused embeddings; with `labels`, the next-token loss: the mean
        over labelled tokens, or with `label_weights` (B, T) the weighted mean sum(w * ce) / sum(w)."""
        inputs_embeds = self.embed_multimodal(input_ids, pixel_values, region_masks, region_image_index)
        if label_weights is None:
            return self.language_model(inputs_embeds=inputs_embeds, attention_mask=attention_mask, labels=labels,
                                       **kwargs)
        out = self.language_model(inputs_embeds=inputs_embeds, attention_mask=attention_mask, **kwargs)
        logits, targets, weights = out.logits[:, :-1], labels[:, 1:], label_weights[:, 1:]  # predict t+1 from t
        ce = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=IGNORE_INDEX, reduction="none")
        out.loss = (ce * weights.flatten()).sum() / weights.sum()
        return out

    @torch.no_grad()
    def generate(self, input_ids: torch.LongTensor, attention_mask: torch.Tensor | None = None,
                 pixel_values: torch.Tensor | None = None, region_masks: torch.Tensor | None = None,
                 region_image_index: torch.LongTensor | None = None, **generate_kwargs) -> torch.LongTensor:
        """New tokens only (B, new): the LLM generates from the fused embeddings (left-padded batch)."""
        inputs_embeds = self.embed_multimodal(input_ids, pixel_values, region_masks, region_image_index)
        return self.language_model.generate(inputs_embeds=inputs_embeds, attention_mask=attention_mask,
                                            **generate_kwargs)
