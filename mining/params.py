"""Miner parameters: one validated object, recorded in every Parquet file and manifest of a round."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

from dataio.errors import InputError
from dataio.triplets import BANDS


@dataclass(frozen=True)
class MiningParams:
    """How negatives are mined. Defaults follow sentence-transformers' `mine_hard_negatives` and NV-Retriever.

    nearest_neighbour: ranks [range_min, range_max) of the anchor's kNN list (the anchor, its positives and
    same-text sentences are not ranked); a candidate scoring above `sim(anchor, positive) - |sim| *
    relative_margin` is dropped (NV-Retriever's TopK-PercPos, 0.05 their best), or above `max_score` for
    unsupervised anchors (whose positive is the anchor itself), which also start at rank
    `max(range_min, unsupervised_range_min)` (kept below range_max - num_negatives): with no positive to
    compare against, a paraphrase in the top ranks cannot be told from a hard negative (docs/mining.md: 40.8%
    of such negatives were the anchor's labeled entailment with max_score alone, 3.2% from rank 3). `sampling`
    picks the `top` candidates or a seeded `random` choice in the window.
    in_domain: a sentence of the anchor's domain label (or k-means cluster when fewer than two labels
    exist) outside its `in_domain_exclude_top` nearest neighbours (default range_max).
    """

    num_negatives: int = 1
    range_min: int = 0
    unsupervised_range_min: int | None = 3
    range_max: int = 50
    relative_margin: float | None = 0.05
    max_score: float | None = 0.95
    sampling: str = "top"
    in_domain_exclude_top: int | None = None
    n_clusters: int | None = None
    max_tries: int = 16
    backend: str = "auto"
    nprobe: int | None = None
    nlist: int | None = None
    ivf_codec: str = "auto"
    recall_sample: int = 256
    recall_target: float | None = 0.95
    batch_size: int = 256
    rows_per_file: int = 500_000
    unsupervised_anchors: bool = True

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        from mining.index import BACKENDS, IVF_CODECS

        def bad(name: str, why: str) -> InputError:
            return InputError(f"mining option {name}={getattr(self, name)!r}: {why}")

        for name in ("num_negatives", "range_max", "max_tries", "recall_sample", "batch_size", "rows_per_file"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise bad(name, "must be an integer >= 1")
        if not isinstance(self.range_min, int) or self.range_min < 0:
            raise bad("range_min", "must be an integer >= 0")
        if self.range_min >= self.range_max:
            raise bad("range_min", f"must be smaller than range_max={self.range_max}")
        if self.unsupervised_range_min is not None and (
                not isinstance(self.unsupervised_range_min, int) or self.unsupervised_range_min < 0):
            raise bad("unsupervised_range_min", "must be an integer >= 0 or None")
        if self.num_negatives > self.range_max - self.range_min:
            raise bad("num_negatives", f"exceeds the {self.range_max - self.range_min} ranks in [range_min, "
                                       f"range_max); widen the window or lower num_negatives")
        if self.relative_margin is not None and not 0 <= self.relative_margin < 1:
            raise bad("relative_margin", "must be in [0, 1) or None")
        if self.max_score is not None and not -1 <= self.max_score <= 1:
            raise bad("max_score", "must be a cosine similarity in [-1, 1] or None")
        if self.sampling not in ("top", "random"):
            raise bad("sampling", "must be 'top' or 'random'")
        for name in ("in_domain_exclude_top", "n_clusters", "nprobe", "nlist"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise bad(name, "must be an integer >= 1 or None")
        if self.recall_target is not None and not 0 < self.recall_target <= 1:
            raise bad("recall_target", "must be in (0, 1] or None (no nprobe tuning)")
        if self.backend not in BACKENDS:
            raise bad("backend", f"choose one of {', '.join(BACKENDS)}")
        if self.ivf_codec not in IVF_CODECS:
            raise bad("ivf_codec", f"choose one of {', '.join(IVF_CODECS)}")

    @property
    def first_unsupervised_rank(self) -> int:
        """The first kNN rank an unsupervised anchor's nearest_neighbour negatives come from (a small window
        keeps at least `num_negatives` ranks rather than failing)."""
        return max(self.range_min, min(self.unsupervised_range_min or 0, self.range_max - self.num_negatives))

    @property
    def exclude_top(self) -> int:
        return self.in_domain_exclude_top or self.range_max

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MiningParams:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InputError(f"unknown mining option {unknown[0]!r}; known options: {', '.join(sorted(known))}")
        return cls(**data)


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
