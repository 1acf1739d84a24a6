"""What exists only because the embedded profile has no pretrained models and no real data.

    synthetic/    the synthetic twin of every dataset, in the real on-disk formats
    standin/      the stand-in VLM endpoint that RecapD captions with
    tokenizer.py  byte-level BPE tokenizers (the LLM's, the CLIP's)
    clip.py       the small CLIP, trained region by region on whole images
    llm.py        the small Llama: packing, region slots, drill phases, its training loop
    rec.py        the base LLM's REC, scored by forced choice
    drills.py     REC drills and dense REC lists
    optim.py      AdamW, the schedule and one step, shared by both trainings
    train.py      the recipes the base_clip and base_models stages run with `source: train`

The paper profile uses none of it: real datasets, a VLM behind an API, CLIP and Vicuna from the hub.
"""
