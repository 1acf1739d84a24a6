"""RGPT configuration: a CLIP vision tower, a Llama-family language model and what joins them."""

from __future__ import annotations

from transformers import AutoConfig, CLIPVisionConfig, LlamaConfig, PreTrainedConfig

REFINEMENTS = ("deconv", "bilinear", "deconv_bilinear", "none")  # paper Table 6
REGION_INPUTS = ("mask", "box")  # paper Tables 15-16


class RGPTConfig(PreTrainedConfig):
    r"""
    Args:
        vision_config: the CLIP vision tower's config (ViT-L/14-336 in the paper).
        text_config: the language model's config (Vicuna-7B v1.5 in the paper).
        vision_feature_layer: the tower layer whose patch features are used (LLaVA: -2).
        refinement: how the low-resolution map Z is refined (Sec. 3.1, Table 6): `deconv`, two
            stride-2 transposed convolutions (4x); `bilinear`, bilinear upsampling (16x);
            `deconv_bilinear`, deconv then bilinear (16x); `none`.
        region_input: `mask` pools each region's own shape; `box` pools its bounding box.
        mask_morphology: > 0 dilates and < 0 erodes region masks with a square kernel of that many
            input pixels before pooling (Table 16: 5 at 336 px); 0 leaves them.
        image_tokens: (H, W) the refined map is pooled back to for the image-level tokens;
            None is the tower's own grid (24 x 24 for ViT-L/14 at 336 px).
        image_token_id / region_token_id: the ids of `<image>` and `<region>` in the tokenizer.
    """

    model_type = "rgpt"
    sub_configs = {"vision_config": CLIPVisionConfig, "text_config": AutoConfig}

    def __init__(self, vision_config=None, text_config=None, vision_feature_layer: int = -2,
                 refinement: str = "deconv", region_input: str = "mask", mask_morphology: int = 0,
                 image_tokens: tuple[int, int] | list[int] | None = None, image_token_id: int = 0,
                 region_token_id: int = 1, projector_hidden_act: str = "gelu", **kwargs):
        if refinement not in REFINEMENTS:
            raise ValueError(f"refinement must be one of {REFINEMENTS}, got {refinement!r}")
        if region_input not in REGION_INPUTS:
            raise ValueError(f"region_input must be one of {REGION_INPUTS}, got {region_input!r}")
        if isinstance(vision_config, dict):
            vision_config = CLIPVisionConfig(**vision_config)
        if isinstance(text_config, dict):
            text_config = AutoConfig.for_model(**text_config)
        self.vision_config = vision_config if vision_config is not None else CLIPVisionConfig()
        self.text_config = text_config if text_config is not None else LlamaConfig()
        self.vision_feature_layer = vision_feature_layer
        self.refinement = refinement
        self.region_input = region_input
        self.mask_morphology = mask_morphology
        self.image_tokens = list(image_tokens) if image_tokens is not None else None
        self.image_token_id = image_token_id
        self.region_token_id = region_token_id
        self.projector_hidden_act = projector_hidden_act
        super().__init__(**kwargs)

    @property
    def grid_size(self) -> int:
        """Side of the tower's patch grid (the low-resolution map Z)."""
        return self.vision_config.image_size // self.vision_config.patch_size

    @property
    def refined_size(self) -> int:
        """Side of the refined high-resolution map the regions are pooled from."""
        return self.grid_size * {"deconv": 4, "bilinear": 16, "deconv_bilinear": 16, "none": 1}[self.refinement]

    @property
    def image_grid(self) -> tuple[int, int]:
        return tuple(self.image_tokens) if self.image_tokens else (self.grid_size, self.grid_size)

    @property
    def num_image_tokens(self) -> int:
        h, w = self.image_grid
        return h * w
