"""Region captioning (Table 4): METEOR and CIDEr of brief region captions against the regions'
reference phrases (RefCOCOg's expressions, Visual Genome's region descriptions).

Scored with pycocoevalcap's own PTB tokenizer and scorers (the COCO caption evaluation code, Java
underneath), as image-level captioning is: CIDEr's document frequencies come from the evaluated
set's references, so a score depends on the whole set, not on one caption.
"""

from __future__ import annotations

import contextlib
import io
from typing import Sequence

from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.meteor.meteor import Meteor
from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer


def caption_scores(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> dict[str, float]:
    """Corpus METEOR and CIDEr of predictions against references, as fractions (papers print x100)."""
    if len(predictions) != len(references) or not predictions:
        raise ValueError(f"need one or more predictions, each with its references; got {len(predictions)} "
                         f"predictions and {len(references)} reference lists")
    for k, refs in enumerate(references):
        if not any(r.strip() for r in refs):
            raise ValueError(f"caption {k} has no reference text; drop regions without phrases first")
    gts = {k: [{"caption": r} for r in refs if r.strip()] for k, refs in enumerate(references)}
    res = {k: [{"caption": p}] for k, p in enumerate(predictions)}
    with contextlib.redirect_stdout(io.StringIO()):  # the tokenizer and METEOR print their progress
        tokenizer = PTBTokenizer()
        gts, res = tokenizer.tokenize(gts), tokenizer.tokenize(res)
        meteor_score, _ = Meteor().compute_score(gts, res)  # its Java process ends with the object
        cider_score, _ = Cider().compute_score(gts, res)
    return {"meteor": float(meteor_score), "cider": float(cider_score), "captions": len(predictions)}
