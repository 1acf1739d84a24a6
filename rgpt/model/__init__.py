"""RGPT alone: configuration, modeling, region handling, image preprocessing, processing,
inference and loading (rgpt.base_models makes the base models it starts from).

Importing this package registers RGPT with the transformers Auto classes, so that
`AutoModelForImageTextToText.from_pretrained(<rgpt checkpoint>)` works.
"""

from transformers import AutoConfig, AutoModelForImageTextToText

from .configuration_rgpt import RGPTConfig
from .modeling_rgpt import RGPTForConditionalGeneration

AutoConfig.register("rgpt", RGPTConfig, exist_ok=True)
AutoModelForImageTextToText.register(RGPTConfig, RGPTForConditionalGeneration, exist_ok=True)

__all__ = ["RGPTConfig", "RGPTForConditionalGeneration"]
