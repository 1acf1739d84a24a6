"""The download registry: every file of the real datasets, where it comes from and where it lands.

Each `RemoteFile` names its official URL (then mirrors, tried in order), the checksum and size
where one is published, and its place under the data root. Archives say which folder they unpack
into and which rgpt.data.layout paths they must produce, so that after `rgpt download` the tree is
exactly the one the readers (and the embedded twin corpus) use.

Checksums come only from published material, never from guesses:
  * COCO and LVIS: sha256 and byte sizes from TensorFlow Datasets' recorded checksums
    (tensorflow_datasets/url_checksums/coco.txt, object_detection/lvis/checksums.tsv).
  * Hugging Face files: the sha256 the hub shows for each LFS file. The hub shows sizes rounded
    ("2.65 GB"), so those sizes are left out.
  * POPE and DenseCap: sha256 and sizes of the git blobs at the pinned commit (raw.githubusercontent
    serves the blob bytes unchanged).
`None` means no checksum is published that we could confirm; such files are still fetched
atomically (a `.part` renamed on completion) but not verified.
"""

from __future__ import annotations

from dataclasses import dataclass

from rgpt.data import layout


@dataclass(frozen=True)
class RemoteFile:
    urls: tuple[str, ...]  # the official URL first, then mirrors, tried in order
    dest: str  # where the download is saved, relative to the data root
    sha256: str | None = None
    size: int | None = None  # bytes
    md5: str | None = None  # for sources that publish only an md5
    extract_to: str | None = None  # archives: the folder they unpack into (the archive is then removed)
    unpacks_to: tuple[str, ...] = ()  # layout paths the archive must create; checked after extraction
    image: bool = False  # image archives, skipped when params say `download.images: false`


@dataclass(frozen=True)
class Source:
    name: str
    files: tuple[RemoteFile, ...]
    revision: str | None = None  # the upstream commit the URLs are pinned to, when there is one


def _hf(repo: str, path: str) -> str:
    return f"https://huggingface.co/datasets/{repo}/resolve/main/{path}"


# ---- V3Det v1.0: annotations and images from the authors' Hugging Face backup ----------------
V3DET_REPO = "yhcao/V3Det_Backup"
# The hub shows no sha256 for 00005, 00008, 00013 and 00015 in the pages we could read.
_V3DET_ZIP_SHA256 = {
    0: "37a8c638b36b614f4c4712184eeb174b5b88922b725e64ca519b945de5900502",
    1: "ab69cd8cdbb890ffcc66f4e08f2380e4b2cd820c99fea6f49b5ac343697511f1",
    2: "edaf06537cecec688c36be4473e7ecf11566235d600b27c85a4779a80de9dfc2",
    3: "c91216879e2f4a4cb728983cffeb8ed0639d4bab820ac5db0c2400f720337aff",
    4: "1dfee83f418c9c6b2eb8984a45471988d093c776f0edc25b842643fe757dae4c",
    5: None,
    6: "88689891f9a8ce43d45dd12b329d0c62e88b63bfc8d5691813df3d4f0e0edc12",
    7: "45521a62cf0ffd7f0c05e221f343052b105f828a640389632c7879025ccb909b",
    8: None,
    9: "954d4eb9078b6b8c394c7af88354f683b753b0af08f3e5a188268907bfc2f59f",
    10: "8a1c2e8b9fc4d5672dade69d0d63d2aa043f0432f2a4f604b81337ebd3af97df",
    11: "5bfdccf8a07fa10aee20733f1f0eaf019bc77369b1c37c8278658629a4d6f6ee",
    12: "0d286abe48f0e2de1f3b91125a79ee4bc328beaeed98676a152537fe06fc2fd9",
    13: None,
    14: "d324c0fe8b5a282276f5d8b57bcd2ec04b2257f5572dda5b505e1d838fe72b6e",
    15: None,
    16: "50dd4fe3d169ebf9e0be5d8aecb0e60a84af1c629944b997bdbf88eb518f5182",
    17: "f2fb4752f3719525d923afc1e398a54f7a00e0d7f98b95a196eaa32c112676dd",
    18: "0d3aa766b197078e9260cd6696c16ea885a92570d974486bf5b5114a6e728b0f",
    19: "485f91a8b2eb5fc8b463a0ac698961e30d960f9f9656eb8c252a070f7affe8dc",
    20: "1807b292df6f2eac4624c2df9be25271555fbdca5e6a7d54a8f5bf13539b6c51",
}

V3DET = Source(
    name="v3det",
    files=(
        RemoteFile(
            urls=(_hf(V3DET_REPO, "v3det_2023_v1_train.json"),),
            dest=layout.V3DET_ANNOTATIONS["train"],
            sha256="58137546b2e7d199d7d59184646badbf29f3227865d55120d29cc4ad7fbd1abd",
        ),
        RemoteFile(urls=(_hf(V3DET_REPO, "v3det_2023_v1_val.json"),), dest=layout.V3DET_ANNOTATIONS["val"]),
        RemoteFile(
            urls=(_hf(V3DET_REPO, "category_name_13204_v3det_2023_v1.txt"),),
            dest=layout.V3DET_CATEGORY_NAMES,
        ),
        # file_name in the JSONs starts with "images/", so the images must land in V3Det/images/.
        # That the zips hold "images/<category>/<file>" is unverified: the unpacks_to check says so
        # after the first zip if they do not.
        *(
            RemoteFile(
                urls=(_hf(V3DET_REPO, f"zips/{i:05d}.zip"),),
                dest=f"{layout.V3DET_ROOT}/{i:05d}.zip",
                sha256=sha256,
                extract_to=layout.V3DET_ROOT,
                unpacks_to=(f"{layout.V3DET_ROOT}/images",),
                image=True,
            )
            for i, sha256 in _V3DET_ZIP_SHA256.items()
        ),
    ),
)

# ---- Visual Genome (latest releases: region_descriptions 1.2, objects and relationships 1.4) ----
# No checksums or exact sizes are published for these files.
_VG_ANNOTATIONS = {
    "image_data": layout.VG_IMAGE_DATA,
    "region_descriptions": layout.VG_REGION_DESCRIPTIONS,
    "relationships": layout.VG_RELATIONSHIPS,
    "objects": layout.VG_OBJECTS,
}

VG = Source(
    name="vg",
    files=(
        *(
            RemoteFile(
                urls=(
                    f"https://visualgenome.org/static/data/dataset/{name}.json.zip",
                    f"https://homes.cs.washington.edu/~ranjay/visualgenome/data/dataset/{name}.json.zip",
                ),
                dest=f"{layout.VG_ROOT}/{name}.json.zip",
                extract_to=layout.VG_ROOT,
                unpacks_to=(path,),
            )
            for name, path in _VG_ANNOTATIONS.items()
        ),
        # DenseCap's train/val/test image ids (unchanged since 2016; blob hashed at densecap 7c32170).
        RemoteFile(
            urls=("https://raw.githubusercontent.com/jcjohnson/densecap/master/info/densecap_splits.json",),
            dest=layout.VG_SPLITS,
            sha256="b8994337972228a57a401f63c5cc7f10b13f4b87261483222185968ef04f4742",
            size=781860,
        ),
        RemoteFile(
            urls=("https://cs.stanford.edu/people/rak248/VG_100K_2/images.zip",),
            dest=f"{layout.VG_ROOT}/images.zip",
            extract_to=layout.VG_ROOT,
            unpacks_to=(f"{layout.VG_ROOT}/VG_100K",),
            image=True,
        ),
        RemoteFile(
            urls=("https://cs.stanford.edu/people/rak248/VG_100K_2/images2.zip",),
            dest=f"{layout.VG_ROOT}/images2.zip",
            extract_to=layout.VG_ROOT,
            unpacks_to=(f"{layout.VG_ROOT}/VG_100K_2",),
            image=True,
        ),
    ),
)

# ---- COCO: 2017 annotations and images, plus the 2014 images RefCOCOg and POPE name -----------
_COCO_IMAGES = {  # zip name: (its folder under coco/, bytes, sha256)
    "train2017": (
        layout.COCO_IMAGE_DIRS["train"],
        19336861798,
        "69a8bb58ea5f8f99d24875f21416de2e9ded3178e903f1f7603e283b9e06d929",
    ),
    "val2017": (
        layout.COCO_IMAGE_DIRS["val"],
        815585330,
        "4f7e2ccb2866ec5041993c9cf2a952bbed69647b115d0f74da7ce8f4bef82f05",
    ),
    "train2014": (
        layout.COCO2014_IMAGE_DIRS["train"],
        13510573713,
        "ede4087e640bddba550e090eae701092534b554b42b05ac33f0300b984b31775",
    ),
    "val2014": (
        layout.COCO2014_IMAGE_DIRS["val"],
        6645013297,
        "fe9be816052049c34717e077d9e34aa60814a55679f804cd043e3cbee3b9fde0",
    ),
}

COCO2017 = Source(
    name="coco2017",
    files=(
        RemoteFile(
            urls=("http://images.cocodataset.org/annotations/annotations_trainval2017.zip",),
            dest=f"{layout.COCO_ROOT}/annotations_trainval2017.zip",
            sha256="113a836d90195ee1f884e704da6304dfaaecff1f023f49b6ca93c4aaae470268",
            size=252907541,
            extract_to=layout.COCO_ROOT,
            unpacks_to=tuple(layout.COCO_ANNOTATIONS.values()),
        ),
        *(
            RemoteFile(
                urls=(f"http://images.cocodataset.org/zips/{name}.zip",),
                dest=f"{layout.COCO_ROOT}/{name}.zip",
                sha256=sha256,
                size=size,
                extract_to=layout.COCO_ROOT,
                unpacks_to=(folder,),
                image=True,
            )
            for name, (folder, size, sha256) in _COCO_IMAGES.items()
        ),
    ),
)

# ---- LVIS v1 annotations (its images are COCO 2017's) ----------------------------------------
_LVIS = {  # split: (bytes, sha256)
    "train": (350264821, "334a4caa374030a7817cf050364525e910f7960f9b6968cef47cffbf3893f8ba"),
    "val": (64026968, "5cae9a3c79aadb667550c2b5dcf7f4d86e059a41ec91ef690225b667e28e9ba5"),
}

LVIS = Source(
    name="lvis",
    files=tuple(
        RemoteFile(
            urls=(
                f"https://dl.fbaipublicfiles.com/LVIS/lvis_v1_{split}.json.zip",
                f"https://s3-us-west-2.amazonaws.com/dl.fbaipublicfiles.com/LVIS/lvis_v1_{split}.json.zip",
            ),
            dest=f"lvis/lvis_v1_{split}.json.zip",
            sha256=sha256,
            size=size,
            extract_to="lvis",
            unpacks_to=(layout.LVIS_ANNOTATIONS[split],),
        )
        for split, (size, sha256) in _LVIS.items()
    ),
)

# ---- RefCOCOg (umd and google refs + instances); no checksum or size is published -------------
REFCOCOG = Source(
    name="refcocog",
    files=(
        RemoteFile(
            urls=(
                "https://bvisionweb1.cs.unc.edu/licheng/referit/data/refcocog.zip",
                # The UNC server has been down since 2022; users share this Wayback Machine copy.
                "https://web.archive.org/web/20220413012904/"
                "https://bvisionweb1.cs.unc.edu/licheng/referit/data/refcocog.zip",
            ),
            dest="refcocog/refcocog.zip",
            extract_to="refcocog",
            unpacks_to=(layout.REFCOCOG_INSTANCES, layout.REFCOCOG_REFS),
        ),
    ),
)

# ---- LAION-CC-SBU-558K (LLaVA stage-1 captions) ---------------------------------------------
# The official repo's pages with LFS hashes were not available to us: no checksums.
LLAVA_REPO = "liuhaotian/LLaVA-Pretrain"
LLAVA_PRETRAIN = Source(
    name="llava_pretrain",
    files=(
        RemoteFile(urls=(_hf(LLAVA_REPO, "blip_laion_cc_sbu_558k.json"),), dest=layout.LLAVA_JSON),
        # `image` in the JSON ("00453/004539375.jpg") is relative to where images.zip is extracted.
        RemoteFile(
            urls=(_hf(LLAVA_REPO, "images.zip"),),
            dest="llava_pretrain/images.zip",
            extract_to=layout.LLAVA_IMAGES,
            image=True,
        ),
    ),
)

# ---- POPE question files, pinned to the clean 3,000-question release -------------------------
# LLaVA's docs link e3e3926, whose random split has 2,910 questions (shared/reference/pope.md §4).
POPE_COMMIT = "109985c74a00a88ba5341f9b0c1d4900f2a1f789"
_POPE = {  # split: (bytes, sha256) of output/coco/coco_pope_<split>.json at POPE_COMMIT
    "random": (368166, "ac25245170b975a5bdf9080b23fd431dfe6be458bc038259c1f4f09a6bef7994"),
    "popular": (370190, "72c1a8ad45d0c13514f5f22598261df41d3b533854d29682e924db50ed8aa753"),
    "adversarial": (370401, "420b3407db1fa9f1187a805dca41cb7b97fd91504e6c2179706188c107fb8ef8"),
}

POPE = Source(
    name="pope",
    revision=POPE_COMMIT,
    files=tuple(
        RemoteFile(
            urls=(
                f"https://raw.githubusercontent.com/AoiDragon/POPE/{POPE_COMMIT}/output/coco/coco_pope_{split}.json",
            ),
            dest=layout.POPE_QUESTIONS[split],
            sha256=sha256,
            size=size,
        )
        for split, (size, sha256) in _POPE.items()
    ),
)

SOURCES: dict[str, Source] = {s.name: s for s in (V3DET, VG, COCO2017, LVIS, REFCOCOG, LLAVA_PRETRAIN, POPE)}


def get_source(name: str) -> Source:
    """The registry entry called `name` (as listed in params.yaml `download.sources`)."""
    if name not in SOURCES:
        raise ValueError(
            f"unknown download source {name!r}: params.yaml download.sources may list {sorted(SOURCES)}"
        )
    return SOURCES[name]
