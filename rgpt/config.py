"""Typed view of params.yaml: the active profile's values, validated.

`load_params()` reads params.yaml, lays `profiles.<profile>` over the base values (which are the
embedded profile) and validates the result, so a typo or a wrong type fails with the key's path.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

PARAMS_FILE = Path("params.yaml")
PROFILES = ("embedded", "paper")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataParams(_Section):
    root: Path = Path("data")
    source: Literal["synthetic", "download"] = "synthetic"


class PopeParams(_Section):
    images: int = Field(100, ge=1)
    sample_num: int = Field(3, ge=1)


class SyntheticParams(_Section):
    seed: int = 20240304
    image_size: tuple[int, int] = (96, 160)
    objects_per_image: tuple[int, int] = (2, 6)
    images: dict[str, int]
    vg_split_fractions: dict[Literal["val", "test"], float]
    refcocog_images: dict[Literal["train", "val", "test"], int]
    lvis_val_from_train2017: int = 40
    v3det_class_skew: float = 1.1
    vg_negative_coordinate_regions: int = 6
    pope: PopeParams = PopeParams()

    def scaled(self, factor: float) -> SyntheticParams:
        """The same corpus with every image count multiplied by `factor` (at least one each)."""
        def scale(counts: dict[str, int]) -> dict[str, int]:
            return {k: max(1, round(v * factor)) for k, v in counts.items()}
        return self.model_copy(update={"images": scale(self.images), "refcocog_images": scale(self.refcocog_images),
                                       "pope": self.pope.model_copy(update={"images": max(1, round(self.pope.images * factor))})})

    @field_validator("images")
    @classmethod
    def _known_image_sets(cls, v: dict[str, int]) -> dict[str, int]:
        expected = {"v3det_train", "v3det_val", "vg", "coco_train2017", "coco_val2017", "llava"}
        if set(v) != expected:
            raise ValueError(f"needs exactly the keys {sorted(expected)}, got {sorted(v)}")
        return v


class DownloadParams(_Section):
    sources: list[str]
    images: bool = True
    retries: int = Field(5, ge=0)
    timeout_s: float = Field(60, gt=0)


class ValidateParams(_Section):
    max_bad_fraction: float = Field(0.02, ge=0, le=1)
    box_tolerance_px: float = Field(1.0, ge=0)
    image_check: Literal["all", "none"] | Annotated[int, Field(ge=1)] = "all"  # N: a seeded sample of N
    seed: int = 0


class BalanceParams(_Section):
    seed: int = 0
    v3det_pretrain_per_class: int = Field(100, ge=1)
    v3det_finetune_per_class: int = Field(10, ge=1)
    coco_per_class: int = Field(20, ge=1)
    lvis_per_class: int = Field(20, ge=1)
    vg_boxes_per_image: int = Field(10, ge=1)
    vg_relations_per_image: int = Field(10, ge=0)

    @model_validator(mode="after")
    def _finetune_draw_within_pretrain(self) -> BalanceParams:
        # the fine-tuning draw is the first k of the pre-training draw's per-class order
        if self.v3det_finetune_per_class > self.v3det_pretrain_per_class:
            raise ValueError("v3det_finetune_per_class must not exceed v3det_pretrain_per_class")
        return self


class ConversationsParams(_Section):
    seed: int = 0
    classification_mode: Literal["multi_turn_all", "one_turn_all", "one_turn_one"] = "multi_turn_all"
    max_regions_per_conversation: int = Field(10, ge=1)
    rec_max_proposals: int = Field(6, ge=2)
    rec_absent_ratio: float = Field(0.15, ge=0, le=1)
    presence_questions: int = Field(2, ge=0)  # per COCO image: this many present objects, as many absent
    recapd: Path | None = None


class TokenizerParams(_Section):
    vocab_size: int = Field(2048, ge=64)


class ClipParams(_Section):
    vocab_size: int = Field(2048, ge=64)  # its own BPE, on the texts it learns (fewer when they run out of pairs)
    image_size: int = Field(96, ge=16)
    patch_size: int = Field(12, ge=1)
    hidden_size: int = 128
    num_layers: int = 3
    num_heads: int = 4
    text_hidden_size: int = 128
    text_layers: int = 3
    projection_dim: int = 128
    epochs: int = Field(6, ge=1)
    batch_size: int = Field(32, ge=2)  # images
    learning_rate: float = Field(2e-3, gt=0)


class LlmParams(_Section):
    hidden_size: int = 256
    num_layers: int = 4
    num_heads: int = 4  # head size 64: what vLLM's CPU attention kernels accept
    intermediate_size: int = 688
    max_length: int = Field(512, ge=16)
    epochs: int = Field(2, ge=1)
    batch_size: int = Field(32, ge=1)
    learning_rate: float = Field(1e-3, gt=0)
    # the drills-alone phases (base.train_llm): dense REC lists (drills.RecList) for at most
    # rec_list_steps steps, until rec_list_target of fresh lists' first questions are right; then
    # rec_template_steps steps of drills in the paper's templates; rec_first_batch_size rows a step,
    # one constant learning rate after rec_first_warmup steps
    rec_list_steps: int = Field(0, ge=0)
    rec_list_target: float = Field(1.0, ge=0, le=1)
    rec_template_steps: int = Field(0, ge=0)
    rec_first_batch_size: int = Field(64, ge=1)
    rec_first_warmup: int = Field(0, ge=0)
    rec_drills: int = Field(0, ge=0)  # REC drill conversations trained on beside the conversations (drills.py)
    rec_drill_turns: int = Field(4, ge=1)  # REC questions per drill


class HubParams(_Section):
    vision: str = "openai/clip-vit-large-patch14-336"
    llm: str = "lmsys/vicuna-7b-v1.5"
    revision: str = "main"


class BaseModelsParams(_Section):
    source: Literal["train", "hub"] = "train"
    seed: int = 0
    tokenizer: TokenizerParams = TokenizerParams()
    clip: ClipParams = ClipParams()
    llm: LlmParams = LlmParams()
    hub: HubParams = HubParams()


class ModelParams(_Section):
    vision_feature_layer: int = -2
    refinement: Literal["deconv", "bilinear", "deconv_bilinear", "none"] = "deconv"
    region_input: Literal["mask", "box"] = "mask"
    mask_morphology: int = 0  # > 0: dilate, < 0: erode, with a kernel of this many input pixels
    image_tokens: tuple[int, int] | None = None  # (H, W) of the pooled image map; None: the tower's grid
    max_length: int = Field(512, ge=16)


class StageTrainParams(_Section):
    learning_rate: float = Field(gt=0)
    global_batch_size: int = Field(ge=1)
    epochs: float = Field(1, gt=0)
    warmup_ratio: float = Field(0.03, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    lr_scheduler: Literal["cosine", "linear", "constant"] = "cosine"
    # token: every answer token weighs the same (LLaVA's loss, the paper's) | turn: every answer
    # turn weighs the same, however many tokens it has (rgpt.train.data.turn_weights)
    loss_weighting: Literal["token", "turn"] = "token"


class TrainParams(_Section):
    seed: int = 0
    nproc_per_node: int = Field(2, ge=1)
    nnodes: int = Field(1, ge=1)
    hostfile: Path | None = None
    deepspeed_config: Path = Path("infra/deepspeed/zero2.json")
    micro_batch_size: int = Field(8, ge=1)
    checkpoint_every: int = Field(20, ge=1)  # optimizer steps
    length_grouped: bool = True
    gradient_checkpointing: bool = False  # recompute the LLM's activations in backward: memory for time
    stage1: StageTrainParams
    stage2: StageTrainParams
    heldout_images: int = Field(100, ge=1)  # validation images for the quick held-out check
    heldout_every: int = Field(0, ge=0)  # optimizer steps between region-reliance checks; 0: none
    heldout_curve_images: int = Field(10, ge=1)  # validation images each of those checks scores


class EvaluateParams(_Section):
    seed: int = 0
    model: Path = Path("models/stage2")  # a saved RGPT folder
    benchmarks: tuple[Literal["classification", "captioning", "rec", "pope"], ...] = (
        "classification", "captioning", "rec", "pope")
    batch_size: int = Field(16, ge=1)
    max_new_tokens: int = Field(32, ge=1)
    max_questions: int | None = Field(None, ge=1)  # per benchmark part, for quick runs; None: all
    classification_mode: Literal["multi_turn_all", "one_turn_all", "one_turn_one"] = "one_turn_one"
    synonyms: bool = True  # also score off-vocabulary answers mapped to the nearest name (Tab. 14)
    rec_proposals: Path | None = None  # JSON {image file: [[x, y, w, h], ...]}; None: annotated regions
    rec_max_proposals: int = Field(10, ge=1)


class StandinParams(_Section):
    """The embedded stand-in VLM endpoint (rgpt/recap/standin.py): its faults are part of the test."""

    corrupt_share: float = Field(0.2, ge=0, le=1)  # region answers made wrong on purpose (known truth)
    error_share: float = Field(0.05, ge=0, le=1)  # requests answered 429 + Retry-After
    slow_share: float = Field(0.02, ge=0, le=1)  # requests answered after slow_latency_s
    latency_s: float = Field(0.0, ge=0)  # every answer waits this long (the benchmark's fixed latency)
    slow_latency_s: float = Field(1.0, ge=0)
    retry_after_s: float = Field(0.1, ge=0)  # the Retry-After its 429s carry


class RecapParams(_Section):
    """RecapD generation (paper Sec. 3.3): a VLM behind an OpenAI-compatible chat-completions API."""

    seed: int = 0
    endpoint: str = "standin"  # standin: the embedded stand-in | a base URL such as http://localhost:8000/v1
    model: str = "rgpt-standin-vlm"
    api_key_env: str = "OPENAI_API_KEY"  # the NAME of the variable holding the key; unset: no Authorization
    concurrency: int = Field(16, ge=1)  # requests in flight, over all shards
    requests_per_minute: float | None = Field(None, gt=0)  # None: no limit
    tokens_per_minute: float | None = Field(None, gt=0)  # None: no limit
    max_retries: int = Field(5, ge=0)
    timeout_s: float = Field(30.0, gt=0)
    max_tokens: int = Field(256, ge=1)
    temperature: float = Field(0.2, ge=0)
    context: float = Field(0.5, ge=0)  # the crop: the box enlarged by this share of its size on each side
    shards: int = Field(4, ge=1)
    task_runner: Literal["threads", "dask", "ray"] = "threads"
    max_failure_ratio: float = Field(0.02, ge=0, le=1)
    cache: Path = Path("cache/recap")  # responses (sqlite) and shard progress; outside dvc's outs, so it survives
    standin: StandinParams = StandinParams()

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, v: str) -> str:
        if v != "standin" and not re.match(r"^https?://", v):
            raise ValueError(f"must be 'standin' or an http(s) base URL such as http://localhost:8000/v1, got {v!r}")
        return v.rstrip("/")


class ThresholdParams(_Section):
    """Where clip_filter cuts: a caption is kept when its score is at least the cutoff."""

    kind: Literal["percentile", "absolute"] = "percentile"
    # percentile: the cutoff is this percentile (0-100) of the run's scores, so about this share of
    # the captions is dropped whatever the CLIP's score scale; absolute: the cutoff is this cosine
    value: float = 19.0

    @model_validator(mode="after")
    def _in_range(self) -> ThresholdParams:
        low, high = (0.0, 100.0) if self.kind == "percentile" else (-1.0, 1.0)
        if not low <= self.value <= high:
            raise ValueError(f"a threshold of kind {self.kind} must lie in [{low:g}, {high:g}], got {self.value:g}")
        return self


class ClipFilterParams(_Section):
    """RecapD's CLIP filter (paper Sec. 3.3): each region against its caption, the low ones dropped."""

    region_input: Literal["mask", "crop"] = "mask"  # mask: pooled from the whole image, as RGPT sees a region
    context: float = Field(0.0, ge=0)  # crop only: the box enlarged by this share of its size on each side
    aggregation: Literal["mean", "min", "max", "first"] = "first"  # a long caption's chunk scores -> one score
    threshold: ThresholdParams = ThresholdParams()
    batch_size: int = Field(32, ge=1)  # captions per forward pass (their images and all their chunks)
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto: cuda when there is one
    gallery: int = Field(12, ge=0)  # captions shown in the gallery, kept and dropped each


class Params(_Section):
    profile: Literal["embedded", "paper"]
    data: DataParams
    synthetic: SyntheticParams
    download: DownloadParams
    validate_: ValidateParams = Field(alias="validate")
    balance: BalanceParams
    conversations: ConversationsParams
    base_models: BaseModelsParams
    model: ModelParams
    train: TrainParams
    evaluate: EvaluateParams = EvaluateParams()
    recap: RecapParams = RecapParams()
    clip_filter: ClipFilterParams = ClipFilterParams()

    def stage_params(self, stage: str) -> dict[str, Any]:
        """The sections a stage reads, as plain JSON-ready values (for logging and hashing)."""
        if stage not in STAGE_SECTIONS:
            raise ValueError(f"unknown stage {stage!r}; known: {', '.join(STAGE_SECTIONS)}")
        dump = json.loads(self.model_dump_json(by_alias=True))
        return {"profile": self.profile, **{name: dump[name] for name in STAGE_SECTIONS[stage]}}


# The params sections each stage reads: dvc.yaml lists the same ones as the stage's `params`.
STAGE_SECTIONS: dict[str, tuple[str, ...]] = {
    "download": ("data", "synthetic", "download"),
    "validate": ("data", "validate"),
    "balance": ("balance",),
    "recap": ("data", "recap"),
    "clip_filter": ("data", "clip_filter", "model"),  # model: vision_feature_layer, the layer the CLIP aligns
    "conversations": ("data", "conversations"),
    "base_clip": ("data", "base_models", "model"),  # model: vision_feature_layer, which CLIP aligns
    "base_models": ("data", "base_models"),
    "train_stage1": ("data", "model", "train"),
    "train_stage2": ("data", "model", "train"),
    "evaluate": ("data", "evaluate"),
}


def merge(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    """A deep copy of `base` with `overlay` laid over it, nested dicts merged key by key."""
    out = copy.deepcopy(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def resolve(raw: dict[str, Any]) -> dict[str, Any]:
    """The active profile's values: the base values with `profiles.<profile>` laid over them."""
    profile = raw.get("profile", "embedded")
    if profile not in PROFILES:
        raise ValueError(f"params.yaml: profile must be one of {PROFILES}, got {profile!r}")
    base = {k: v for k, v in raw.items() if k != "profiles"}
    return merge(base, (raw.get("profiles") or {}).get(profile) or {})


def load_params(path: str | Path = PARAMS_FILE) -> Params:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: run from the repository root, where params.yaml is")
    raw = yaml.safe_load(path.read_text()) or {}
    try:
        return Params.model_validate(resolve(raw))
    except ValidationError as e:
        lines = [f"  {'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors()]
        raise ValueError(f"{path}: invalid parameters\n" + "\n".join(lines)) from None


def params_hash(section: dict[str, Any]) -> str:
    """A short, stable hash of a stage's params (tags MLflow runs, names Prefect flow versions)."""
    return hashlib.sha256(json.dumps(section, sort_keys=True, default=str).encode()).hexdigest()[:12]


def set_profile(profile: str, path: str | Path = PARAMS_FILE) -> None:
    """Switch the active profile by rewriting only the `profile:` line (comments survive)."""
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}: choose one of {PROFILES}")
    path = Path(path)
    text = path.read_text()
    new, n = re.subn(r"(?m)^profile:\s*\S+", f"profile: {profile}", text, count=1)
    if n != 1:
        raise ValueError(f"{path}: no top-level 'profile:' line to change")
    path.write_text(new)
    load_params(path)  # fail now, not in the middle of a pipeline run
