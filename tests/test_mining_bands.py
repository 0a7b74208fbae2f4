"""Bands: guards (never the anchor or a positive, by id and by text), the positive-aware filter on a hand-built
case, windows, domains, and determinism."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest

import mining.bands as bands_mod
import mining.clusters as clusters_mod
from dataio.errors import InputError
from dataio.triplet_layout import BANDS, GRADED_BANDS
from dataio.triplets import SCHEMA, read_triplets
from mining.corpus import CorpusSource, load_corpus, normalized_keys
from mining.params import MiningParams
from mining.pipeline import mine
from mining.testing import HashEncoder, TableEncoder, toy_sentences


def sentences(n: int, seed: int = 0) -> list[str]:
    return toy_sentences(n, seed, lengths=(3, 7), unique=False)


@pytest.fixture
def inputs(tmp_path):
    """Corpus with case/whitespace near-duplicates, pairs whose positive is the anchor's nearest text, NLI rows."""
    base = sentences(60)
    corpus = base + [s.upper() for s in base[:8]] + ["  ".join(s.split()) + " " for s in base[8:12]]
    (tmp_path / "corpus.txt").write_text("\n".join(corpus) + "\n", encoding="utf-8")
    pairs = [(base[i], base[i] + " too") for i in range(20, 30)] + [(base[1], base[1].upper() + " again")]
    (tmp_path / "pairs.tsv").write_text("anchor\tpositive\n" + "".join(f"{a}\t{p}\n" for a, p in pairs),
                                        encoding="utf-8")
    nli = [(base[i], base[i] + " indeed", base[i + 1]) for i in range(30, 40)]
    nli += [(base[40], base[40] + " yes", base[40].upper())]  # contradiction equal to the anchor's text
    (tmp_path / "nli.csv").write_text("sent0,sent1,hard_neg\n" + "".join(",".join(r) + "\n" for r in nli),
                                      encoding="utf-8")
    return tmp_path


def load(inputs, domain=False):
    src = [CorpusSource(inputs / "corpus.txt", domain="c")] if domain else [inputs / "corpus.txt"]
    return load_corpus(src, pairs=[inputs / "pairs.tsv"], nli=[inputs / "nli.csv"])


def run(corpus, out, **kw):
    params = kw.pop("params", MiningParams(range_max=10, num_negatives=2))
    return mine(corpus, kw.pop("encoder", HashEncoder(16)), out, params=params, show_progress=False,
                keep_results=True, **kw)


def test_no_negative_is_its_anchor_or_positive_by_id_or_text(inputs, tmp_path):
    corpus = load(inputs)
    result = run(corpus, tmp_path / "out")
    table = read_triplets(tmp_path / "out").to_pydict()
    assert set(table["band"]) == set(BANDS) - set(GRADED_BANDS)  # the graded bands only when asked for

    def norm(t: str) -> str:
        return " ".join(t.casefold().split())

    for i in range(len(table["band"])):
        assert table["negative_id"][i] not in (table["anchor_id"][i], table["positive_id"][i])
        neg = norm(table["negative"][i])
        assert neg != norm(table["anchor"][i]) and neg != norm(table["positive"][i])
    # every positive of an anchor is excluded, not only the row's own one
    positives: dict[str, set[str]] = {}
    for a, p in zip(corpus.anchor, corpus.positive):
        positives.setdefault(corpus.ids[a], set()).add(corpus.ids[p])
    for a, n in zip(table["anchor_id"], table["negative_id"]):
        assert n not in positives[a]
    # the guards were exercised, not vacuous: near-duplicates and positives sit among the nearest neighbours
    nn = result.bands["nearest_neighbour"]["skipped"]
    assert nn["anchor"] > 0 and nn["positive"] > 0 and nn["same_text"] > 0
    assert result.bands["nli_contradiction"]["skipped"] == {"same_text": 1}
    assert result.bands["nli_contradiction"]["rows"] == 10


def test_random_band_guard_under_pressure(tmp_path):
    """A pool of 4 texts: most random draws hit the anchor or its positive and must be redrawn."""
    (tmp_path / "p.csv").write_text("anchor,positive\nred cat,red cat sat\nblue dog,blue dog ran\n", encoding="utf-8")
    corpus = load_corpus(pairs=[tmp_path / "p.csv"])
    res = run(corpus, tmp_path / "o", bands=["random"], params=MiningParams(num_negatives=2, range_max=3))
    r = res.results["random"]
    assert r.rows == 4
    for a, p, n in zip(r.anchor, r.positive, r.negative):
        assert n != a and n != p
    assert r.skipped["anchor"] + r.skipped["positive"] + r.skipped["duplicate"] > 0


def unit(cos: float, axis: int, dim: int = 8) -> list[float]:
    v = np.zeros(dim)
    v[0], v[axis] = cos, np.sqrt(1 - cos**2)
    return v.tolist()


def test_positive_aware_filter_hand_built(tmp_path):
    """sim(A,P)=0.80, threshold 0.80 - 0.05*0.80 = 0.76: C1 (0.90) and C2 (0.78) dropped, C3 (0.70) kept."""
    vectors = {"A": unit(1.0, 1), "P": unit(0.80, 1), "C1": unit(0.90, 2), "C2": unit(0.78, 3),
               "C3": unit(0.70, 4), "C4": unit(0.50, 5), "Z": [0, 0, 0, 0, 0, 0, 0, 1]}
    (tmp_path / "c.txt").write_text("C1\nC2\nC3\nC4\nZ\n", encoding="utf-8")
    (tmp_path / "p.csv").write_text("anchor,positive\nA,P\n", encoding="utf-8")
    corpus = load_corpus([tmp_path / "c.txt"], pairs=[tmp_path / "p.csv"])
    enc = TableEncoder(vectors)
    params = MiningParams(range_max=6, num_negatives=1, relative_margin=0.05, max_score=None)
    r = run(corpus, tmp_path / "o", bands=["nearest_neighbour"], encoder=enc,
            params=params).results["nearest_neighbour"]
    a_row = [i for i in range(r.rows) if corpus.texts[r.anchor[i]] == "A"]
    assert len(a_row) == 1
    i = a_row[0]
    assert corpus.texts[r.negative[i]] == "C3"
    assert r.rank[i] == 2  # C1 rank 0, C2 rank 1 (the anchor and its positive are not ranked)
    assert r.anchor_negative_sim[i] == pytest.approx(0.70, abs=2e-3)
    assert r.anchor_positive_sim[i] == pytest.approx(0.80, abs=2e-3)
    assert r.skipped["relative_margin"] >= 2
    # without the filter the nearest candidate (C1, above the positive itself) is taken
    params_off = MiningParams(range_max=6, num_negatives=1, relative_margin=None, max_score=None)
    r2 = run(corpus, tmp_path / "o2", bands=["nearest_neighbour"], encoder=enc,
             params=params_off).results["nearest_neighbour"]
    j = next(k for k in range(r2.rows) if corpus.texts[r2.anchor[k]] == "A")
    assert corpus.texts[r2.negative[j]] == "C1" and r2.rank[j] == 0


def test_the_window_fills_after_filtering(tmp_path):
    """Filter first, then take the window (NV-Retriever): with range [0, 2) and 2 negatives, the filtered C1 and
    C2 are replaced by C3 and C4. Cutting the window first (the old order) left the anchor with no negative."""
    vectors = {"A": unit(1.0, 1), "P": unit(0.80, 1), "C1": unit(0.90, 2), "C2": unit(0.78, 3),
               "C3": unit(0.70, 4), "C4": unit(0.50, 5), "Z": [0, 0, 0, 0, 0, 0, 0, 1]}
    (tmp_path / "c.txt").write_text("C1\nC2\nC3\nC4\nZ\n", encoding="utf-8")
    (tmp_path / "p.csv").write_text("anchor,positive\nA,P\n", encoding="utf-8")
    corpus = load_corpus([tmp_path / "c.txt"], pairs=[tmp_path / "p.csv"], unsupervised_anchors=False)
    params = MiningParams(range_max=2, num_negatives=2, relative_margin=0.05, max_score=None)
    r = run(corpus, tmp_path / "o", bands=["nearest_neighbour"], encoder=TableEncoder(vectors),
            params=params).results["nearest_neighbour"]
    assert sorted(corpus.texts[n] for n in r.negative) == ["C3", "C4"]
    assert sorted(r.rank.tolist()) == [2, 3]  # their places in A's neighbour list, C1 and C2 before them
    assert r.skipped["relative_margin"] == 2 and r.skipped.get("no_negative_found", 0) == 0


def test_max_score_for_unsupervised_anchors(tmp_path):
    vectors = {"U": unit(1.0, 1), "N1": unit(0.97, 2), "N2": unit(0.90, 3), "N3": unit(0.10, 4)}
    (tmp_path / "c.txt").write_text("U\nN1\nN2\nN3\n", encoding="utf-8")
    corpus = load_corpus([tmp_path / "c.txt"])
    enc = TableEncoder(vectors)
    r = run(corpus, tmp_path / "o", bands=["nearest_neighbour"], encoder=enc,
            params=MiningParams(range_max=3, max_score=0.95, unsupervised_range_min=None)).results["nearest_neighbour"]
    u = next(i for i in range(r.rows) if corpus.texts[r.anchor[i]] == "U")
    assert corpus.texts[r.negative[u]] == "N2" and corpus.texts[r.positive[u]] == "U"
    assert r.skipped["max_score"] >= 1


def test_unsupervised_anchors_start_at_unsupervised_range_min_supervised_ones_do_not(tmp_path):
    """U has no positive: its top ranks may be paraphrases, so by default it skips ranks 0-2. A has one."""
    vectors = {"U": unit(1.0, 1), "A": unit(1.0, 1, dim=8)[::-1], "P": unit(0.99, 1, dim=8)[::-1],
               **{f"N{k}": unit(0.9 - 0.1 * k, 2 + k) for k in range(5)},
               **{f"M{k}": unit(0.9 - 0.1 * k, 2 + k, dim=8)[::-1] for k in range(3)}}
    (tmp_path / "c.txt").write_text("U\n" + "".join(f"N{k}\n" for k in range(5)) + "".join(f"M{k}\n" for k in range(3)),
                                    encoding="utf-8")
    (tmp_path / "p.csv").write_text("anchor,positive\nA,P\n", encoding="utf-8")
    corpus = load_corpus([tmp_path / "c.txt"], pairs=[tmp_path / "p.csv"])
    enc = TableEncoder(vectors)

    def negatives(**kw):
        params = MiningParams(range_max=6, num_negatives=1, max_score=None, relative_margin=None, **kw)
        r = run(corpus, tmp_path / str(kw), bands=["nearest_neighbour"], encoder=enc,
                params=params).results["nearest_neighbour"]
        return {corpus.texts[a]: (corpus.texts[n], int(k)) for a, n, k in zip(r.anchor, r.negative, r.rank)}

    default = negatives()
    assert default["U"] == ("N3", 3)
    assert default["A"] == ("M0", 0)
    assert negatives(unsupervised_range_min=None)["U"] == ("N0", 0)
    assert negatives(range_min=1, unsupervised_range_min=0)["U"] == ("N1", 1)
    assert MiningParams(range_max=3, num_negatives=2).first_unsupervised_rank == 1  # a small window shrinks it
    with pytest.raises(InputError, match="unsupervised_range_min"):
        MiningParams(unsupervised_range_min=-1)


def test_window_and_random_sampling_stay_in_ranks(inputs, tmp_path):
    corpus = load(inputs)
    params = MiningParams(range_min=2, range_max=6, num_negatives=3, sampling="random", relative_margin=None,
                          max_score=None)
    r = run(corpus, tmp_path / "o", bands=["nearest_neighbour"], params=params).results["nearest_neighbour"]
    assert r.rows > 0 and r.rank.min() >= 2 and r.rank.max() < 6
    # brute-force check of ranks: rank = position among non-anchor, non-positive, non-duplicate texts
    emb = HashEncoder(16).encode(corpus.texts)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    keys = normalized_keys(corpus.texts)
    pos_of = {}
    for a, p in zip(corpus.anchor, corpus.positive):
        pos_of.setdefault(int(a), set()).add(int(p))
    for a, p, n, rank in list(zip(r.anchor, r.positive, r.negative, r.rank))[:40]:
        order = np.argsort(-(emb @ emb[a]), kind="stable")
        ranked = [j for j in order if j != a and j not in pos_of[int(a)] and keys[j] != keys[a] and keys[j] != keys[p]]
        sims = emb[ranked] @ emb[a]
        s = float(emb[n] @ emb[a])
        eps = 2e-3  # float16 storage; bag-of-words vectors tie exactly for reordered words
        assert (sims > s + eps).sum() <= rank <= (sims >= s - eps).sum() - 1


def test_in_domain_same_label_and_outside_top_neighbours(inputs, tmp_path):
    corpus = load(inputs)
    # give half the corpus another label
    corpus.domains = ["x" if i % 2 else "y" for i in range(len(corpus))]
    corpus._fingerprint = None
    params = MiningParams(range_max=5, num_negatives=1)
    res = run(corpus, tmp_path / "o", bands=["in_domain"], params=params)
    r = res.results["in_domain"]
    assert r.rows > 0
    assert all(corpus.domains[a] == corpus.domains[n] for a, n in zip(r.anchor, r.negative))
    assert "domain labels ['x', 'y']" in res.bands["in_domain"]["note"]
    emb = HashEncoder(16).encode(corpus.texts)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    for a, n in zip(r.anchor, r.negative):
        sims = emb @ emb[a]
        assert (sims > sims[n] + 1e-3).sum() >= 5  # at least m = range_max texts are closer


def test_in_domain_falls_back_to_kmeans_clusters(inputs, tmp_path):
    res = run(load(inputs, domain=True), tmp_path / "o", bands=["in_domain"])
    assert "k-means clusters" in res.bands["in_domain"]["note"]
    assert res.bands["in_domain"]["rows"] > 0


def planted_clusters(n_per: int = 50, k: int = 4, dim: int = 16, seed: int = 0):
    """k well-separated directions plus small noise: any sound k-means recovers the plant exactly."""
    from mining.embeddings import Embeddings

    rng = np.random.default_rng(seed)
    centres = np.linalg.qr(rng.normal(size=(dim, dim)))[0][:k]
    x = np.repeat(centres, n_per, axis=0) + 0.05 * rng.normal(size=(k * n_per, dim))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    truth = np.repeat(np.arange(k), n_per)
    perm = rng.permutation(len(x))
    return Embeddings(x[perm].astype(np.float16), [str(i) for i in range(len(x))], "m", "p"), truth[perm]


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    return len(set(zip(a.tolist(), b.tolist()))) == len(set(a.tolist())) == len(set(b.tolist()))


@pytest.mark.parametrize("faiss_present", [True, False])
def test_cluster_labels_recover_planted_clusters_with_and_without_faiss(faiss_present, monkeypatch):
    """The GPU host has no FAISS: the torch k-means fallback must find the same clusters."""
    if not faiss_present:
        monkeypatch.setitem(__import__("sys").modules, "faiss", None)  # import faiss -> ImportError
    emb, truth = planted_clusters()
    labels = clusters_mod.cluster_labels(emb, 4, seed=0)
    assert same_partition(labels, truth)
    assert (clusters_mod.cluster_labels(emb, 4, seed=0) == labels).all()


def test_torch_kmeans_reseeds_empty_clusters():
    emb, _ = planted_clusters(n_per=10, k=2)
    cent = clusters_mod.spherical_kmeans_torch(emb.matrix.astype(np.float32), 6, seed=1)
    assert cent.shape == (6, 16) and np.isfinite(cent).all()
    np.testing.assert_allclose(np.linalg.norm(cent, axis=1), 1, atol=1e-5)


def test_same_seed_same_triplets_other_seed_other_random_band(inputs, tmp_path):
    corpus = load(inputs)
    run(corpus, tmp_path / "a", seed=3)
    run(load(inputs), tmp_path / "b", seed=3)
    run(corpus, tmp_path / "c", seed=4)
    ta, tb, tc = (read_triplets(tmp_path / d).to_pydict() for d in "abc")
    assert ta == tb
    ra = [n for n, b in zip(ta["negative_id"], ta["band"]) if b == "random"]
    rc = [n for n, b in zip(tc["negative_id"], tc["band"]) if b == "random"]
    assert ra != rc


def test_chunking_does_not_change_triplets(inputs, tmp_path, monkeypatch):
    corpus = load(inputs)
    params = MiningParams(range_max=8, num_negatives=2, sampling="random")
    run(corpus, tmp_path / "a", params=params)
    monkeypatch.setattr(bands_mod, "ROW_CHUNK", 7)
    run(corpus, tmp_path / "b", params=params)
    assert read_triplets(tmp_path / "a").to_pydict() == read_triplets(tmp_path / "b").to_pydict()


def test_bands_order_by_measured_difficulty(inputs, tmp_path):
    res = run(load(inputs), tmp_path / "o")
    d = res.difficulties()
    assert d["random"] < d["nearest_neighbour"]
    assert d["in_domain"] < d["nearest_neighbour"]


def test_empty_band_is_reported_not_written(tmp_path):
    (tmp_path / "c.txt").write_text("\n".join(sentences(30)) + "\n", encoding="utf-8")
    res = run(load_corpus([tmp_path / "c.txt"]), tmp_path / "o", bands=["random", "nli_contradiction"])
    assert res.bands["nli_contradiction"]["rows"] == 0
    assert res.bands["nli_contradiction"]["note"] == "no NLI triplets in the inputs"
    assert {f.band for f in res.manifest.files} == {"random"}


def test_bad_options_are_input_errors():
    with pytest.raises(InputError, match="range_min"):
        MiningParams(range_min=5, range_max=5)
    with pytest.raises(InputError, match="num_negatives"):
        MiningParams(range_min=0, range_max=2, num_negatives=3)
    with pytest.raises(InputError, match="unknown mining option 'foo'"):
        MiningParams.from_dict({"foo": 1})


def test_unknown_band_is_an_input_error(inputs, tmp_path):
    with pytest.raises(InputError, match="unknown band 'hardest'"):
        run(load(inputs), tmp_path / "o", bands=["hardest"])
    assert not (tmp_path / "o").exists()


def test_files_hold_the_band_rows(inputs, tmp_path):
    """Each band's rows sit in its own folder (the band lives in the path, not in the files)."""
    res = run(load(inputs), tmp_path / "o")
    for entry, f in zip(res.manifest.files, res.files):
        assert f.parent.name == f"band={entry.band}" and f.name.startswith("part-")
        assert pq.read_schema(f).names == SCHEMA.names
