"""RecapD (paper Sec. 3.3): region captions from a VLM, in two stages, through an OpenAI-compatible API.

  images.py    crops, pixel hashes and data URLs (shared by the generator and the stand-in)
  cache.py     the persistent response cache
  client.py    the async chat-completions client: concurrency, rate limits, retries, counters
  generate.py  the two-stage protocol over one shard of images, resumable
  stages.py    the `recap` stage: shards, task runner, outputs and metrics
  stats.py     terminal summaries for `rgpt recap stats`
  clip_filter.py         the `clip_filter` stage: CLIP scores of regions against their chunked
                         captions, the cutoff, precision/recall against the stand-in's truth
  clip_filter_report.py  its plots and gallery
"""
