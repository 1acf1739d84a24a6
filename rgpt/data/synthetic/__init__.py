"""The embedded profile's source: a synthetic twin of every real dataset (see corpus.py)."""

from .corpus import write_corpus

__all__ = ["write_corpus"]
