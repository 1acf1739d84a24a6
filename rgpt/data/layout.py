"""Where each dataset's files live under the data root, exactly as the official archives unpack.

The download registry extracts to these paths, the synthetic corpus writes to them and the
readers read from them, so the two profiles share one layout (shared/reference/dataset-formats.md).
"""

from __future__ import annotations

SYNTHETIC_MANIFEST = "SYNTHETIC.json"  # at the root of a corpus the synthetic generator wrote

# V3Det: file_name inside the JSON already starts with "images/", so the image root is V3Det/.
V3DET_ROOT = "v3det/V3Det"
V3DET_ANNOTATIONS = {
    "train": "v3det/V3Det/annotations/v3det_2023_v1_train.json",
    "val": "v3det/V3Det/annotations/v3det_2023_v1_val.json",
}
V3DET_CATEGORY_NAMES = "v3det/V3Det/annotations/category_name_13204_v3det_2023_v1.txt"

# Visual Genome: four index-aligned JSON lists; images in VG_100K/ or VG_100K_2/ (per the url).
VG_ROOT = "vg"
VG_IMAGE_DATA = "vg/image_data.json"
VG_REGION_DESCRIPTIONS = "vg/region_descriptions.json"
VG_RELATIONSHIPS = "vg/relationships.json"
VG_OBJECTS = "vg/objects.json"
VG_SPLITS = "vg/densecap_splits.json"  # DenseCap's train/val/test image ids, the usual VG test split

# COCO 2017 (and the 2014 image folders that RefCOCOg and POPE name).
COCO_ROOT = "coco"
COCO_ANNOTATIONS = {
    "train": "coco/annotations/instances_train2017.json",
    "val": "coco/annotations/instances_val2017.json",
}
COCO_IMAGE_DIRS = {"train": "coco/train2017", "val": "coco/val2017"}
COCO2014_IMAGE_DIRS = {"train": "coco/train2014", "val": "coco/val2014"}

# LVIS v1: images are COCO 2017's, located through each image's coco_url.
LVIS_ANNOTATIONS = {"train": "lvis/lvis_v1_train.json", "val": "lvis/lvis_v1_val.json"}

# RefCOCOg (umd split, as read by the refer API); images are COCO train2014.
REFCOCOG_INSTANCES = "refcocog/refcocog/instances.json"
REFCOCOG_REFS = "refcocog/refcocog/refs(umd).p"

# LLaVA pre-training captions (LAION-CC-SBU-558K); `image` is relative to images/.
LLAVA_JSON = "llava_pretrain/blip_laion_cc_sbu_558k.json"
LLAVA_IMAGES = "llava_pretrain/images"

# POPE question files (JSON Lines despite the extension); images are COCO val2014.
POPE_SPLITS = ("random", "popular", "adversarial")
POPE_QUESTIONS = {s: f"pope/coco/coco_pope_{s}.json" for s in POPE_SPLITS}
