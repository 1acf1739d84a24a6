"""RegionGPT (RGPT): region-level vision-language model, trained, evaluated and served end to end."""

__version__ = "0.1.0"
