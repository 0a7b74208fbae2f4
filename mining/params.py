"""Miner parameters: one validated pydantic model, recorded in every Parquet file and manifest of a round.

`MiningParams` is the one place each parameter's default, limits and meaning live: `mine`'s options take
their defaults and help from its fields (mining/cli.py), and a run config embeds it as `mining.params`
(flows/run/config.py), so a bad value there is reported with its YAML line like any other setting. It needs no
torch. Built directly (`MiningParams(range_max=3)`, `from_dict`), bad values raise `InputError`; validated as
part of a larger model, they are that model's `ValidationError` with the key's full path.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    model_serializer,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from dataio.errors import InputError, describe_validation_error
from dataio.triplet_layout import BANDS

BACKENDS = ("auto", "torch", "torch-ivf", "faiss-flat", "faiss-ivf")  # mining.index's kNN search backends
IVF_CODECS = ("auto", "flat", "sq8", "pq")  # codes of faiss-ivf's lists (mining.index)
ENGINES = ("dask", "ray")  # what spreads a round's shards over workers (mining.shards)


MINED_POSITIVE_FIELDS = ("mined_positives", "positive_min_score", "positive_min_margin", "positive_mutual",
                         "positive_judge")
# Who judges a mined positive (mining.judge): auto = the teacher when the run names one, else the student;
# both = the mean of the teacher's and the student's cosines (an ensemble judge: the two models' errors differ).
POSITIVE_JUDGES = ("auto", "teacher", "student", "both")


def _field_error(name: str, value: Any, why: str) -> ValidationError:
    """A ValidationError at key `name`: a cross-field check reported at the field a user should change."""
    error = PydanticCustomError("value_error", "{error}", {"error": why})
    return ValidationError.from_exception_data("MiningParams", [InitErrorDetails(type=error, loc=(name,),
                                                                                  input=value)])


class MiningParams(BaseModel):
    """How negatives are mined. Defaults follow sentence-transformers' `mine_hard_negatives` and NV-Retriever.

    nearest_neighbour: ranks [range_min, range_max) of the anchor's kNN list (the anchor, its positives and
    same-text sentences are not ranked); a candidate scoring above `sim(anchor, positive) - |sim| *
    relative_margin` is dropped (NV-Retriever's TopK-PercPos, 0.05 their best), or above `max_score` for
    unsupervised anchors (whose positive is the anchor itself), which also start at rank
    `max(range_min, unsupervised_range_min)` (kept below range_max - num_negatives): with no positive to
    compare against, a paraphrase in the top ranks cannot be told from a hard negative (docs/mining.md: 40.8%
    of such negatives were the anchor's labeled entailment with max_score alone, 3.2% from rank 3). `sampling`
    picks the `top` candidates or a seeded `random` choice in the window.
    With a teacher (`mine(teacher=...)`), the filter compares the teacher's cosines instead of the student's.
    mined_positives (mining.judge): an unsupervised anchor's confident nearest neighbour becomes its positive.
    in_domain: a sentence of the anchor's domain label (or k-means cluster when fewer than two labels
    exist) outside its `in_domain_exclude_top` nearest neighbours (default range_max).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    num_negatives: int = Field(1, ge=1, description="negatives per anchor and band")
    range_min: int = Field(0, ge=0, description="nearest_neighbour: the first kNN rank used")
    unsupervised_range_min: int | None = Field(
        3, ge=0, description="nearest_neighbour: the first kNN rank for anchors without a positive (their "
                             "paraphrases sit in the top ranks); None: range_min")
    range_max: int = Field(50, ge=1, description="nearest_neighbour: ranks below this are used")
    relative_margin: float | None = Field(
        0.05, ge=0, lt=1, description="drop candidates above (1 - margin) x sim(anchor, positive); None: no limit")
    max_score: float | None = Field(
        0.95, ge=-1, le=1, description="anchors without a positive: drop candidates above this cosine similarity; "
                                       "None: no limit")
    sampling: Literal["top", "random"] = Field("top", description="top or random within the kNN window")
    in_domain_exclude_top: int | None = Field(
        None, ge=1, description="in_domain: skip the anchor's nearest neighbours up to this rank (None: range_max)")
    n_clusters: int | None = Field(
        None, ge=1, description="in_domain: k-means clusters standing in for domains when fewer than two domain "
                                "labels exist (None: chosen from the pool's size)")
    max_tries: int = Field(16, ge=1, description="random and in_domain: draws per negative before giving up")
    backend: Literal[BACKENDS] = Field(
        "auto", description="the search backend of the kNN lists: auto, torch, torch-ivf, faiss-flat or faiss-ivf")
    nprobe: int | None = Field(None, ge=1, description="IVF lists each query probes (None: tuned to recall_target)")
    nlist: int | None = Field(None, ge=1, description="IVF lists (None: from the pool's size)")
    ivf_codec: Literal[IVF_CODECS] = Field("auto", description="faiss-ivf codes: auto, flat, sq8 or pq")
    recall_sample: int = Field(256, ge=1, description="queries whose recall@k an approximate search measures")
    recall_target: float | None = Field(
        0.95, gt=0, le=1, description="recall@k the approximate search must reach (None: no nprobe tuning)")
    batch_size: int = Field(256, ge=1, description="sentences per encoding batch")
    rows_per_file: int = Field(500_000, ge=1, description="rows per Parquet file of a band")
    unsupervised_anchors: bool = Field(
        True, description="corpus sentences without a pair are anchors too (False: search candidates only)")
    mined_positives: bool = Field(
        False, description="unsupervised anchors: the judge's confident nearest neighbour becomes the positive "
                           "(the teacher judges when given, else the student)")
    positive_min_score: float = Field(
        0.9, ge=-1, le=1, description="mined_positives: the judge's cosine the neighbour must reach")
    positive_min_margin: float = Field(
        0.0, ge=0, le=2, description="mined_positives: how much the neighbour must beat the next one by")
    positive_mutual: bool = Field(
        True, description="mined_positives: the anchor must be its neighbour's nearest neighbour too")
    positive_judge: Literal[POSITIVE_JUDGES] = Field(
        "auto", description="mined_positives: whose cosines judge them: auto (the teacher when the run names one, "
                            "else the student), teacher, student, or both (the mean of the teacher's and the "
                            "student's cosine; teacher and both need a teacher)")
    similarity_sample: int | None = Field(
        None, ge=1, description="when no band needs the student's embeddings of the pool (random and "
                                "nli_contradiction only; mined positives only when the teacher judges them): score "
                                "only this many rows per band, seeded, and encode only their texts; the other rows' "
                                "student similarities are null (a teacher's scores are kept on every row). None: "
                                "every row (the whole pool is encoded)")

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as err:
            raise _input_error(err) from None

    # Only a direct call gets the InputError: marked as pydantic marks its own RootModel.__init__, validation
    # as part of a larger model (a run config) does not call this __init__, so its errors keep their key path.
    __init__.__pydantic_base_init__ = True  # type: ignore[attr-defined]

    @model_validator(mode="after")
    def _window(self) -> MiningParams:
        if self.range_min >= self.range_max:
            raise _field_error("range_min", self.range_min, f"must be smaller than range_max={self.range_max}")
        if self.num_negatives > self.range_max - self.range_min:
            raise _field_error("num_negatives", self.num_negatives,
                               f"exceeds the {self.range_max - self.range_min} ranks in [range_min, range_max); "
                               f"widen the window or lower num_negatives")
        return self

    @property
    def first_unsupervised_rank(self) -> int:
        """The first kNN rank an unsupervised anchor's nearest_neighbour negatives come from (a small window
        keeps at least `num_negatives` ranks rather than failing)."""
        return max(self.range_min, min(self.unsupervised_range_min or 0, self.range_max - self.num_negatives))

    @property
    def exclude_top(self) -> int:
        return self.in_domain_exclude_top or self.range_max

    @model_serializer(mode="wrap")
    def _later_settings_only_when_on(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """The mined-positive settings are dumped only when `mined_positives` is on (they change nothing
        otherwise), and `similarity_sample` only when set, so rounds and run configs recorded before they existed
        keep their parameters, fingerprints and cache keys."""
        out = handler(self)
        if not self.mined_positives:
            for name in MINED_POSITIVE_FIELDS:
                out.pop(name, None)
        if self.similarity_sample is None:  # likewise: recorded only when set
            out.pop("similarity_sample", None)
        if self.positive_judge == "auto":  # likewise: the judge chosen as before the setting existed
            out.pop("positive_judge", None)
        return out

    @property
    def needs_teacher(self) -> bool:
        """Whether these settings judge mined positives with a teacher that the run must name."""
        return self.mined_positives and self.positive_judge in ("teacher", "both")

    def judge_of_positives(self, has_teacher: bool) -> Literal["teacher", "student", "both"]:
        """Who judges this round's mined positives, given whether the run has a teacher (`auto` resolved);
        an `InputError` when the setting needs a teacher the run does not name."""
        if self.needs_teacher and not has_teacher:
            raise InputError(f"mining option positive_judge={self.positive_judge!r} needs the run's teacher: give "
                             f"teacher: {{path: ...}} in the run config (mine(teacher=...) in Python) or set "
                             f"positive_judge: student")
        if self.positive_judge == "auto":
            return "teacher" if has_teacher else "student"
        return self.positive_judge

    def as_dict(self) -> dict[str, Any]:
        """Every parameter that applies, defaults included: what a round's files and manifest record."""
        return self.model_dump()

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MiningParams:
        try:
            return cls.model_validate(dict(data))
        except ValidationError as err:
            raise _input_error(err) from None


def _input_error(err: ValidationError) -> InputError:
    """`mining option range_min=5: must be smaller than range_max=5`, or the unknown option and the known ones."""
    first = err.errors(include_url=False)[0]
    if first["type"] == "extra_forbidden":
        return InputError(f"unknown mining option {'.'.join(map(str, first['loc']))!r}; known options: "
                          f"{', '.join(sorted(MiningParams.model_fields))}")
    key, message = describe_validation_error(err, "", MiningParams)
    if first["type"] == "value_error" and first.get("input") is not None:
        key = f"{key}={first['input']!r}"
    return InputError(f"mining option {key}: {message}")


def check_bands(bands: Sequence[str] | None) -> list[str] | None:
    if bands is None:
        return None
    out = []
    for b in bands:
        if b not in BANDS:
            raise InputError(f"unknown band {b!r}; choose from {', '.join(BANDS)}")
        if b not in out:
            out.append(b)
    if not out:
        raise InputError(f"no band chosen; choose from {', '.join(BANDS)}")
    return out


def address_problem(engine: str, address: str | None) -> str | None:
    """Why `address` cannot be the `engine`'s cluster (it is the other engine's kind), or None. A settings check:
    configs and `mine --cluster` ask it before anything is loaded (mining.shards asks it again when it connects)."""
    other = {"dask": ("ray://", "Ray", "ray"), "ray": ("tcp://", "Dask", "dask")}[engine]
    if address is not None and address.startswith(other[0]):
        return f"{address!r} is a {other[1]} address, but the engine is {engine}: set the engine to {other[2]}"
    return None
