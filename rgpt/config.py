"""Typed view of params.yaml: the active profile's values, validated.

`load_params()` reads params.yaml, lays `profiles.<profile>` over the base values (which are the
embedded profile) and validates the result, so a typo or a wrong type fails with the key's path.
params.yaml holds every value: the classes here type, bound and document the keys and hold no
defaults of their own, so a key missing from params.yaml is an error, not a silent second value.
`Params.for_stage` is what a stage may read of them (the keys dvc.yaml lists for it).
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
    root: Path
    source: Literal["synthetic", "download"]


class PopeParams(_Section):
    images: int = Field(ge=1)
    sample_num: int = Field(ge=1)


class SyntheticParams(_Section):
    seed: int
    image_size: tuple[int, int]
    objects_per_image: tuple[int, int]
    images: dict[str, int]
    vg_split_fractions: dict[Literal["val", "test"], float]
    refcocog_images: dict[Literal["train", "val", "test"], int]
    lvis_val_from_train2017: int
    v3det_class_skew: float
    vg_negative_coordinate_regions: int
    pope: PopeParams

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
    images: bool
    retries: int = Field(ge=0)
    timeout_s: float = Field(gt=0)


class ValidateParams(_Section):
    max_bad_fraction: float = Field(ge=0, le=1)
    box_tolerance_px: float = Field(ge=0)
    image_check: Literal["all", "none"] | Annotated[int, Field(ge=1)] = "all"  # N: a seeded sample of N
    seed: int


class BalanceParams(_Section):
    seed: int
    v3det_pretrain_per_class: int = Field(ge=1)
    v3det_finetune_per_class: int = Field(ge=1)
    coco_per_class: int = Field(ge=1)
    lvis_per_class: int = Field(ge=1)
    vg_boxes_per_image: int = Field(ge=1)
    vg_relations_per_image: int = Field(ge=0)

    @model_validator(mode="after")
    def _finetune_draw_within_pretrain(self) -> BalanceParams:
        # the fine-tuning draw is the first k of the pre-training draw's per-class order
        if self.v3det_finetune_per_class > self.v3det_pretrain_per_class:
            raise ValueError("v3det_finetune_per_class must not exceed v3det_pretrain_per_class")
        return self


class ConversationsParams(_Section):
    seed: int
    classification_mode: Literal["multi_turn_all", "one_turn_all", "one_turn_one"]
    max_regions_per_conversation: int = Field(ge=1)
    rec_max_proposals: int = Field(ge=2)
    rec_absent_ratio: float = Field(ge=0, le=1)
    presence_questions: int = Field(ge=0)  # per COCO image: this many present objects, as many absent
    recapd: Path | None


class TokenizerParams(_Section):
    vocab_size: int = Field(ge=64)


class ClipParams(_Section):
    vocab_size: int = Field(ge=64)  # its own BPE, on the texts it learns (fewer when they run out of pairs)
    image_size: int = Field(ge=16)
    patch_size: int = Field(ge=1)
    hidden_size: int
    num_layers: int
    num_heads: int
    text_hidden_size: int
    text_layers: int
    projection_dim: int
    epochs: int = Field(ge=1)
    batch_size: int = Field(ge=2)  # images
    learning_rate: float = Field(gt=0)


class LlmParams(_Section):
    hidden_size: int
    num_layers: int
    num_heads: int  # head size 64: what vLLM's CPU attention kernels accept
    intermediate_size: int
    max_length: int = Field(ge=16)
    epochs: int = Field(ge=1)
    batch_size: int = Field(ge=1)
    learning_rate: float = Field(gt=0)
    # the drills-alone phases (embedded.llm.train_llm): dense REC lists (drills.RecList) for at most
    # rec_list_steps steps, until rec_list_target of fresh lists' first questions are right; then
    # rec_template_steps steps of drills in the paper's templates; rec_first_batch_size rows a step,
    # one constant learning rate after rec_first_warmup steps
    rec_list_steps: int = Field(ge=0)
    rec_list_target: float = Field(ge=0, le=1)
    rec_template_steps: int = Field(ge=0)
    rec_first_batch_size: int = Field(ge=1)
    rec_first_warmup: int = Field(ge=0)
    rec_drills: int = Field(ge=0)  # REC drill conversations trained on beside the conversations (drills.py)
    rec_drill_turns: int = Field(ge=1)  # REC questions per drill


class HubParams(_Section):
    vision: str
    llm: str
    revision: str


class BaseModelsParams(_Section):
    source: Literal["train", "hub"]
    seed: int
    tokenizer: TokenizerParams
    clip: ClipParams
    llm: LlmParams
    hub: HubParams


class ModelParams(_Section):
    vision_feature_layer: int
    refinement: Literal["deconv", "bilinear", "deconv_bilinear", "none"]
    region_input: Literal["mask", "box"]
    mask_morphology: int  # > 0: dilate, < 0: erode, with a kernel of this many input pixels
    image_tokens: tuple[int, int] | None  # (H, W) of the pooled image map; None: the tower's grid
    max_length: int = Field(ge=16)


class StageTrainParams(_Section):
    learning_rate: float = Field(gt=0)
    global_batch_size: int = Field(ge=1)
    epochs: float = Field(gt=0)
    warmup_ratio: float = Field(ge=0, lt=1)
    weight_decay: float = Field(ge=0)
    lr_scheduler: Literal["cosine", "linear", "constant"]
    # token: every answer token weighs the same (LLaVA's loss, the paper's) | turn: every answer
    # turn weighs the same, however many tokens it has (rgpt.train.data.turn_weights)
    loss_weighting: Literal["token", "turn"]


class TrainParams(_Section):
    seed: int
    nproc_per_node: int = Field(ge=1)
    nnodes: int = Field(ge=1)
    hostfile: Path | None
    deepspeed_config: Path
    micro_batch_size: int = Field(ge=1)
    checkpoint_every: int = Field(ge=1)  # optimizer steps
    length_grouped: bool
    gradient_checkpointing: bool  # recompute the LLM's activations in backward: memory for time
    stage1: StageTrainParams
    stage2: StageTrainParams
    heldout_images: int = Field(ge=1)  # validation images for the quick held-out check
    heldout_every: int = Field(ge=0)  # optimizer steps between region-reliance checks; 0: none
    heldout_curve_images: int = Field(ge=1)  # validation images each of those checks scores


class EvaluateParams(_Section):
    seed: int
    model: Path  # a saved RGPT folder
    benchmarks: tuple[Literal["classification", "captioning", "rec", "pope"], ...]
    batch_size: int = Field(ge=1)
    max_new_tokens: int = Field(ge=1)
    max_questions: int | None = Field(ge=1)  # per benchmark part, for quick runs; None: all
    classification_mode: Literal["multi_turn_all", "one_turn_all", "one_turn_one"]
    synonyms: bool  # also score off-vocabulary answers mapped to the nearest name (Tab. 14)
    rec_proposals: Path | None  # JSON {image file: [[x, y, w, h], ...]}; None: annotated regions
    rec_max_proposals: int = Field(ge=1)


class StandinParams(_Section):
    """The embedded stand-in VLM endpoint (rgpt/embedded/standin/): its faults are part of the test."""

    corrupt_share: float = Field(ge=0, le=1)  # region answers made wrong on purpose (known truth)
    error_share: float = Field(ge=0, le=1)  # requests answered 429 + Retry-After
    slow_share: float = Field(ge=0, le=1)  # requests answered after slow_latency_s
    latency_s: float = Field(ge=0)  # every answer waits this long (the benchmark's fixed latency)
    slow_latency_s: float = Field(ge=0)
    retry_after_s: float = Field(ge=0)  # the Retry-After its 429s carry


class RecapParams(_Section):
    """RecapD generation (paper Sec. 3.3): a VLM behind an OpenAI-compatible chat-completions API."""

    seed: int
    endpoint: str  # standin: the embedded stand-in | a base URL such as http://localhost:8000/v1
    model: str
    api_key_env: str  # the NAME of the variable holding the key; unset: no Authorization
    concurrency: int = Field(ge=1)  # requests in flight, over all shards
    requests_per_minute: float | None = Field(gt=0)  # None: no limit
    tokens_per_minute: float | None = Field(gt=0)  # None: no limit
    max_retries: int = Field(ge=0)
    timeout_s: float = Field(gt=0)
    max_tokens: int = Field(ge=1)
    temperature: float = Field(ge=0)
    context: float = Field(ge=0)  # the crop: the box enlarged by this share of its size on each side
    shards: int = Field(ge=1)
    task_runner: Literal["threads", "dask", "ray"]
    max_failure_ratio: float = Field(ge=0, le=1)
    cache: Path  # responses (sqlite) and shard progress; outside dvc's outs, so it survives
    standin: StandinParams

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, v: str) -> str:
        if v != "standin" and not re.match(r"^https?://", v):
            raise ValueError(f"must be 'standin' or an http(s) base URL such as http://localhost:8000/v1, got {v!r}")
        return v.rstrip("/")


class ThresholdParams(_Section):
    """Where clip_filter cuts: a caption is kept when its score is at least the cutoff."""

    kind: Literal["percentile", "absolute"]
    # percentile: the cutoff is this percentile (0-100) of the run's scores, so about this share of
    # the captions is dropped whatever the CLIP's score scale; absolute: the cutoff is this cosine
    value: float

    @model_validator(mode="after")
    def _in_range(self) -> ThresholdParams:
        low, high = (0.0, 100.0) if self.kind == "percentile" else (-1.0, 1.0)
        if not low <= self.value <= high:
            raise ValueError(f"a threshold of kind {self.kind} must lie in [{low:g}, {high:g}], got {self.value:g}")
        return self


class ClipFilterParams(_Section):
    """RecapD's CLIP filter (paper Sec. 3.3): each region against its caption, the low ones dropped."""

    region_input: Literal["mask", "crop"]  # mask: pooled from the whole image, as RGPT sees a region
    context: float = Field(ge=0)  # crop only: the box enlarged by this share of its size on each side
    aggregation: Literal["mean", "min", "max", "first"]  # a long caption's chunk scores -> one score
    threshold: ThresholdParams
    batch_size: int = Field(ge=1)  # captions per forward pass (their images and all their chunks)
    device: Literal["auto", "cpu", "cuda"]  # auto: cuda when there is one
    gallery: int = Field(ge=0)  # captions shown in the gallery, kept and dropped each


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
    evaluate: EvaluateParams
    recap: RecapParams
    clip_filter: ClipFilterParams

    def stage_params(self, stage: str) -> dict[str, Any]:
        """The values of the keys a stage reads (`stage_keys`), nested as in params.yaml, JSON-ready
        (what tags and versions the stage's runs: `params_hash`)."""
        dump = {"profile": self.profile, **json.loads(self.model_dump_json(by_alias=True))}
        out: dict[str, Any] = {}
        for key in stage_keys(stage):
            if key == "profiles":  # the overlays: their effect on the active profile is in the values
                continue
            value, parts = dump, key.split(".")
            for part in parts:
                if not isinstance(value, dict) or part not in value:
                    raise ValueError(f"dvc.yaml: stage {stage} lists params key {key!r}, "
                                     "which params.yaml does not have")
                value = value[part]
            node = out
            for part in parts[:-1]:
                node = node.setdefault(part, {})
            node[parts[-1]] = value
        return out

    def for_stage(self, stage: str) -> StageParams:
        """These params as `stage` may read them: only the keys dvc.yaml lists for it."""
        return StageParams(self, stage, stage_keys(stage))


# --------------------------------------------------------------------------- what a stage reads

DVC_FILE = Path("dvc.yaml")
# download is not a dvc stage (its output is data/ itself, which `dvc add data` records): its keys are here.
DOWNLOAD_KEYS = ("profile", "data", "synthetic", "download")


class UndeclaredParamError(RuntimeError):
    """A stage read a params key that dvc.yaml does not list for it."""


def stage_keys(stage: str) -> tuple[str, ...]:
    """The params keys a stage reads: the `params` of its stage in dvc.yaml, the one place they are
    declared (download: DOWNLOAD_KEYS). dvc.yaml is read from the working directory (the repository
    root, where the pipeline runs), else beside the package."""
    if stage == "download":
        return DOWNLOAD_KEYS
    path = DVC_FILE if DVC_FILE.exists() else Path(__file__).resolve().parents[1] / DVC_FILE
    stages = (yaml.safe_load(path.read_text()) or {}).get("stages", {})
    if stage not in stages:
        raise ValueError(f"unknown stage {stage!r}; {path} has {', '.join(stages)} (and download)")
    return tuple(stages[stage].get("params", ()))


class StageParams:
    """`Params` as one stage sees them: reading a key that dvc.yaml does not list for the stage
    raises UndeclaredParamError. A value a stage's outputs depend on but DVC does not track would
    let the value change without the stage running again; so the stages get their params through
    this view (`Params.for_stage`), and the end-to-end test runs every stage so.

    A listed section or key reads as the real value; a section with only some keys listed reads as
    a view of its own; a method of a section (`model_dump_json`, `scaled`) reads all of it.
    """

    def __init__(self, params: BaseModel, stage: str, keys: tuple[str, ...], path: str = ""):
        self._params, self.stage, self._keys, self._path = params, stage, keys, path

    def _covers(self, key: str) -> bool:
        return any(key == k or key.startswith(k + ".") for k in self._keys)

    def _undeclared(self, key: str) -> UndeclaredParamError:
        return UndeclaredParamError(f"stage {self.stage} reads params key {key!r}, which dvc.yaml does not list "
                                    f"under the stage's params: add it there")

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        fields = type(self._params).model_fields
        if name not in fields:  # a method or property of the section: it may read any of its keys
            if self._path and self._covers(self._path):
                return getattr(self._params, name)
            raise self._undeclared(f"{self._path or 'params'}.{name}")
        key = ".".join(filter(None, [self._path, fields[name].alias or name]))
        value = getattr(self._params, name)
        if self._covers(key):
            return value
        if isinstance(value, BaseModel) and any(k.startswith(key + ".") for k in self._keys):
            return StageParams(value, self.stage, self._keys, key)
        raise self._undeclared(key)

    def stage_params(self, stage: str) -> dict[str, Any]:
        if stage != self.stage or self._path:
            raise self._undeclared(f"stage_params({stage!r})")
        return self._params.stage_params(stage)


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
