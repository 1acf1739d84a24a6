"""The embedded profile's synthetic corpus: every dataset's twin, in the real on-disk formats
(corpus.py writes it; scene.py draws the images; text.py writes their captions and phrases)."""
