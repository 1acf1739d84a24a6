"""The base models RGPT starts from, written in one layout whichever way they were made.

    base_models/tokenizer/        the tokenizer RGPT uses: the LLM's, with <image> and <region> as single tokens
    base_models/clip/             a transformers CLIPModel (RGPT uses its vision tower) and its own tokenizer,
                                  with clip/base_clip.json: source, params and figures (or the hub commit)
    base_models/llm/              a transformers causal LM (Llama architecture) and its tokenizer
    base_models/base_models.json  the tokenizer's and the LLM's manifest: source, params and figures (or the hub commit)

Two dvc stages write it. `base_clip` writes clip/ from the validated regions (and the words of
the RecapD captions), ahead of the instruction data, because RecapD's filter (clip_filter) scores
with it before the conversations exist; `base_models` writes the tokenizer and the LLM, which
learn from the conversations (clip.py, llm.py: one module per stage, so that neither
depends on the other's code). `source: train` (embedded profile) trains them (`rgpt.embedded`);
`source: hub` (paper profile) downloads the paper's CLIP ViT-L/14-336 and Vicuna-7B v1.5 and
extends Vicuna's tokenizer with the two placeholders; its LLM still has the old vocabulary size,
so `RGPTForConditionalGeneration.from_base_models` resizes its embeddings to `len(tokenizer)`.
"""
