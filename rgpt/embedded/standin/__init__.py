"""The embedded stand-in for RecapD's VLM endpoint: it knows the synthetic scenes from their
annotations, answers OpenAI-compatible chat completions about them on loopback, and fails,
stalls and lies on purpose, with a known truth (server.py says how)."""

from .corruption import CORRUPTIONS
from .server import MODEL_ID, StandinVLM

__all__ = ["CORRUPTIONS", "MODEL_ID", "StandinVLM"]
