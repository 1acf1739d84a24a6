"""RecapD (paper Sec. 3.3): region captions from a VLM, in two stages, through an OpenAI-compatible API.

  images.py    crops, pixel hashes and data URLs (shared by the generator and the stand-in)
  cache.py     the persistent response cache
  client.py    the async chat-completions client: concurrency, rate limits, retries, counters
  generate.py  the two-stage protocol over one shard of images, resumable
  standin.py   the embedded stand-in VLM endpoint that knows the synthetic scenes
  stages.py    the `recap` stage: shards, task runner, outputs and metrics
"""
