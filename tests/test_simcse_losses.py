"""The SimCSE losses against the paper's formulas, computed independently with loops in float64."""

from __future__ import annotations

import math

import pytest
import torch

from simcse.losses import sup_simcse_loss, unsup_simcse_loss

TAU = 0.05


def _cos(u: torch.Tensor, v: torch.Tensor) -> float:
    u, v = u.tolist(), v.tolist()
    dot = sum(a * b for a, b in zip(u, v))
    return dot / (math.sqrt(sum(a * a for a in u)) * math.sqrt(sum(b * b for b in v)))


def reference_unsup(z1: torch.Tensor, z2: torch.Tensor, tau: float = TAU) -> tuple[float, float]:
    """Eq. (1) of Gao et al. 2021: -log e^{sim(h_i, h_i')/τ} / Σ_j e^{sim(h_i, h_j')/τ}."""
    n = len(z1)
    losses, hits = [], 0
    for i in range(n):
        sims = [_cos(z1[i], z2[j]) / tau for j in range(n)]
        losses.append(-math.log(math.exp(sims[i]) / sum(math.exp(s) for s in sims)))
        hits += max(range(n), key=lambda j: sims[j]) == i
    return sum(losses) / n, hits / n


def reference_sup(a: torch.Tensor, p: torch.Tensor, neg: torch.Tensor, alpha: list[list[float]],
                  tau: float = TAU) -> tuple[float, float]:
    """Eq. (5) with SimCSE's weighting: the anchor's own hard negatives weighted by α (multiplicatively,
    e^{s} -> α e^{s}); every other anchor's hard negatives are plain negatives with weight 1."""
    n, k = neg.shape[0], neg.shape[1]
    losses, hits = [], 0
    for i in range(n):
        pos = [math.exp(_cos(a[i], p[j]) / tau) for j in range(n)]
        den = sum(pos)
        best_other = max([_cos(a[i], p[j]) / tau for j in range(n) if j != i], default=-math.inf)
        for j in range(n):
            for m in range(k):
                s = _cos(a[i], neg[j, m]) / tau
                w = alpha[i][m] if j == i else 1.0
                den += w * math.exp(s)
                if w > 0:
                    best_other = max(best_other, s + math.log(w))
        losses.append(-math.log(pos[i] / den))
        hits += _cos(a[i], p[i]) / tau >= best_other
    return sum(losses) / n, hits / n


def _rand(*shape: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64)


def test_unsup_loss_matches_the_paper_formula():
    z1, z2 = _rand(6, 8, seed=1), _rand(6, 8, seed=2)
    z2[:3] = z1[:3] + 0.1 * _rand(3, 8, seed=3)  # some positives close, so accuracy is not trivial
    loss, acc = unsup_simcse_loss(z1, z2, TAU)
    ref_loss, ref_acc = reference_unsup(z1, z2)
    assert loss.dtype == torch.float64
    assert loss.item() == pytest.approx(ref_loss, rel=1e-10)
    assert acc.item() == pytest.approx(ref_acc)


def test_unsup_temperature_changes_the_loss_as_the_formula_says():
    z1, z2 = _rand(5, 4, seed=4), _rand(5, 4, seed=5)
    for tau in (0.01, 0.1, 1.0):
        assert unsup_simcse_loss(z1, z2, tau)[0].item() == pytest.approx(reference_unsup(z1, z2, tau)[0], rel=1e-10)


@pytest.mark.parametrize("k", [1, 3])
def test_sup_loss_matches_the_paper_formula_with_alpha_one(k):
    a, p, n = _rand(5, 8, seed=6), _rand(5, 8, seed=7), _rand(5, k, 8, seed=8)
    loss, acc = sup_simcse_loss(a, p, n, alpha=1.0, temperature=TAU)
    ref_loss, ref_acc = reference_sup(a, p, n, [[1.0] * k for _ in range(5)])
    assert loss.item() == pytest.approx(ref_loss, rel=1e-10)
    assert acc.item() == pytest.approx(ref_acc)


def test_sup_loss_accepts_bd_negatives_for_k_one():
    a, p, n = _rand(4, 8, seed=9), _rand(4, 8, seed=10), _rand(4, 8, seed=11)
    assert sup_simcse_loss(a, p, n)[0].item() == pytest.approx(sup_simcse_loss(a, p, n.unsqueeze(1))[0].item())


def test_sup_loss_weights_only_the_anchors_own_negative_by_alpha():
    a, p, n = _rand(4, 8, seed=12), _rand(4, 8, seed=13), _rand(4, 2, 8, seed=14)
    alpha = [[0.5, 2.0], [3.0, 0.25], [1.0, 1.0], [0.1, 4.0]]
    loss, _ = sup_simcse_loss(a, p, n, alpha=torch.tensor(alpha, dtype=torch.float64))
    assert loss.item() == pytest.approx(reference_sup(a, p, n, alpha)[0], rel=1e-10)
    # one α per row (the batch contract's flat list) broadcasts over the k columns
    rows = [0.5, 2.0, 1.0, 3.0]
    loss_rows, _ = sup_simcse_loss(a, p, n, alpha=rows)
    assert loss_rows.item() == pytest.approx(reference_sup(a, p, n, [[r, r] for r in rows])[0], rel=1e-10)
    # a larger α means a harder denominator: the loss grows monotonically with α
    values = [sup_simcse_loss(a, p, n, alpha=x)[0].item() for x in (0.0, 0.5, 1.0, 2.0, 8.0)]
    assert values == sorted(values) and len(set(values)) == len(values)


def test_alpha_zero_removes_the_own_negative_exactly_with_finite_gradients():
    a, p, n = _rand(4, 8, seed=15), _rand(4, 8, seed=16), _rand(4, 2, 8, seed=17)
    a.requires_grad_(True)
    n.requires_grad_(True)
    alpha = [[0.0, 1.0], [0.0, 0.0], [1.0, 0.0], [0.0, 0.0]]
    loss, _ = sup_simcse_loss(a, p, n, alpha=alpha)
    assert loss.item() == pytest.approx(reference_sup(a.detach(), p, n.detach(), alpha)[0], rel=1e-10)
    loss.backward()
    assert torch.isfinite(a.grad).all() and torch.isfinite(n.grad).all()
    # the independent autograd reference: drop the masked terms from the candidate list altogether
    a2, n2 = a.detach().clone().requires_grad_(True), n.detach().clone().requires_grad_(True)
    total = 0
    for i in range(4):
        cands = [torch.cosine_similarity(a2[i], p[j], dim=0) / TAU for j in range(4)]
        for j in range(4):
            for m in range(2):
                w = alpha[i][m] if j == i else 1.0
                if w > 0:
                    cands.append(torch.cosine_similarity(a2[i], n2[j, m], dim=0) / TAU + math.log(w))
        total = total - (cands[i] - torch.logsumexp(torch.stack(cands), dim=0))
    (total / 4).backward()
    torch.testing.assert_close(a.grad, a2.grad, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(n.grad, n2.grad, rtol=1e-9, atol=1e-12)


def test_alpha_zero_everywhere_equals_dropping_own_negatives_and_differs_from_none():
    a, p, n = _rand(3, 8, seed=18), _rand(3, 8, seed=19), _rand(3, 8, seed=20)
    with_zero = sup_simcse_loss(a, p, n, alpha=0.0)[0].item()
    assert with_zero == pytest.approx(reference_sup(a, p, n.unsqueeze(1), [[0.0]] * 3)[0], rel=1e-10)
    assert with_zero != pytest.approx(sup_simcse_loss(a, p, None)[0].item())


def test_sup_without_negatives_is_in_batch_infonce():
    a, p = _rand(5, 8, seed=21), _rand(5, 8, seed=22)
    assert sup_simcse_loss(a, p)[0].item() == pytest.approx(reference_unsup(a, p)[0], rel=1e-10)


def test_accuracy_counts_anchors_whose_positive_ranks_first():
    a = torch.eye(4, dtype=torch.float64)[:3]
    n = torch.eye(4, dtype=torch.float64)[3].expand(3, 4)  # hard negatives orthogonal to every anchor
    _, acc = sup_simcse_loss(a, a.clone(), n)
    assert acc.item() == 1.0
    p_bad = a.clone()
    p_bad[0] = -a[0]  # anchor 0's positive points away from it: every other candidate beats it
    _, acc_bad = sup_simcse_loss(a, p_bad, n)
    assert acc_bad.item() == pytest.approx(2 / 3)
    n_hard = n.clone()
    n_hard[1] = a[1] + 0.5 * a[0]  # anchor 1's own hard negative nearly matches it, but is below its positive
    assert sup_simcse_loss(a, a.clone(), n_hard)[1].item() == 1.0
    assert sup_simcse_loss(a, 0.2 * a + a[[1, 2, 0]], n_hard)[1].item() < 1.0


def test_bad_alpha_and_shapes_are_refused():
    a, p, n = _rand(3, 4, seed=23), _rand(3, 4, seed=24), _rand(3, 2, 4, seed=25)
    with pytest.raises(ValueError):
        sup_simcse_loss(a, p, n, alpha=-1.0)
    with pytest.raises(ValueError):
        sup_simcse_loss(a, p, n, alpha=[[1.0, 1.0, 1.0]] * 3)
    with pytest.raises(ValueError):
        sup_simcse_loss(a, p[:2], n)
    with pytest.raises(ValueError):
        unsup_simcse_loss(a, p[:, :2])


def test_half_precision_inputs_give_a_float32_loss():
    z1, z2 = _rand(4, 8, seed=26).bfloat16(), _rand(4, 8, seed=27).bfloat16()
    loss, _ = unsup_simcse_loss(z1, z2)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(reference_unsup(z1.double(), z2.double())[0], rel=1e-4)


def test_excluded_candidates_leave_only_that_rows_softmax():
    """A mined negative that repeats another row's sentence is not a negative of that row: excluding it for
    that row equals the reference loss without that term, and leaves every other row's loss as it was."""
    a, p, n = _rand(3, 8, seed=30), _rand(3, 8, seed=31), _rand(3, 2, 8, seed=32)
    exclude = torch.zeros(3, 3 + 3 * 2, dtype=torch.bool)
    exclude[0, 3 + 1 * 2 + 1] = True  # row 0: negative 1 of row 1
    exclude[2, 0] = True  # row 2: the positive of row 0
    got = sup_simcse_loss(a, p, n, alpha=1.0, exclude=exclude)[0].item()
    rows = []
    for i in range(3):
        logits = [_cos(a[i], p[j]) / TAU for j in range(3)]
        logits += [_cos(a[i], n[j, m]) / TAU for j in range(3) for m in range(2)]
        kept = [x for c, x in enumerate(logits) if not exclude[i, c]]
        rows.append(-(logits[i] - math.log(sum(math.exp(x) for x in kept))))
    assert got == pytest.approx(sum(rows) / 3, rel=1e-10)
    assert abs(got - sup_simcse_loss(a, p, n, alpha=1.0)[0].item()) > 1e-9
    with pytest.raises(ValueError, match="own positive"):
        sup_simcse_loss(a, p, n, exclude=torch.eye(3, 9, dtype=torch.bool))
    with pytest.raises(ValueError, match="exclude must be"):
        sup_simcse_loss(a, p, n, exclude=torch.zeros(3, 3, dtype=torch.bool))


# ------------------------------------------------------------------------------------------- distillation
def reference_kl(a: torch.Tensor, c: torch.Tensor, t: list[list[float]], tau: float, tau_t: float,
                 exclude: list[list[bool]] | None = None) -> float:
    """KL(p ‖ q) per anchor with loops: p from the teacher's cosines at τ_t, q from the student's at τ."""
    n, m = len(a), len(c)
    total = 0.0
    for i in range(n):
        keep = [j for j in range(m) if not (exclude and exclude[i][j])]
        s = [_cos(a[i], c[j]) / tau for j in keep]
        u = [t[i][j] / tau_t for j in keep]
        zs, zu = sum(math.exp(x) for x in s), sum(math.exp(x) for x in u)
        for x, y in zip(s, u):
            p, q = math.exp(y) / zu, math.exp(x) / zs
            total += p * (math.log(p) - math.log(q))
    return total / n


def test_distill_kl_matches_the_formula_and_is_zero_when_the_student_is_the_teacher():
    from simcse.losses import distill_kl_loss

    a, c = _rand(5, 8, seed=11), _rand(7, 8, seed=12)
    t = _rand(5, 7, seed=13).tanh()
    got = distill_kl_loss(a, c, t, temperature=0.05, teacher_temperature=0.1)
    assert got.item() == pytest.approx(reference_kl(a, c, t.tolist(), 0.05, 0.1), rel=1e-9, abs=1e-9)
    exclude = torch.zeros(5, 7, dtype=torch.bool)
    exclude[0, 3] = exclude[2, 6] = True
    got = distill_kl_loss(a, c, t, 0.05, 0.1, exclude=exclude)
    assert got.item() == pytest.approx(reference_kl(a, c, t.tolist(), 0.05, 0.1, exclude.tolist()), rel=1e-9)
    own = torch.nn.functional.normalize(a, dim=-1) @ torch.nn.functional.normalize(c, dim=-1).T
    assert distill_kl_loss(a, c, own, 0.05, 0.05).item() == pytest.approx(0.0, abs=1e-12)


def test_distill_kl_gradient_moves_the_student_toward_the_teacher():
    from simcse.losses import distill_kl_loss

    a = _rand(4, 8, seed=21).requires_grad_(True)
    c = _rand(6, 8, seed=22)
    t = _rand(4, 6, seed=23).tanh()
    before = distill_kl_loss(a, c, t, 0.05, 0.05)
    before.backward()
    with torch.no_grad():
        stepped = a - 1e-3 * a.grad
    assert distill_kl_loss(stepped, c, t, 0.05, 0.05).item() < before.item()


def test_margin_mse_matches_the_formula_with_weights():
    from simcse.losses import margin_mse_loss

    a, p, n = _rand(4, 8, seed=31), _rand(4, 8, seed=32), _rand(4, 2, 8, seed=33)
    tm = _rand(4, 2, seed=34).tanh()
    w = torch.tensor([[1.0, 1.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]], dtype=torch.float64)
    expect_num = expect_den = 0.0
    for i in range(4):
        for m in range(2):
            err = (_cos(a[i], p[i]) - _cos(a[i], n[i, m]) - tm[i, m].item()) ** 2
            expect_num += w[i, m].item() * err
            expect_den += w[i, m].item()
    assert margin_mse_loss(a, p, n, tm, w).item() == pytest.approx(expect_num / expect_den, rel=1e-9)
    one = margin_mse_loss(a, p, n[:, 0], tm[:, 0])
    ref = sum((_cos(a[i], p[i]) - _cos(a[i], n[i, 0]) - tm[i, 0].item()) ** 2 for i in range(4)) / 4
    assert one.item() == pytest.approx(ref, rel=1e-9)
