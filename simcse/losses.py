"""SimCSE's contrastive losses (Gao et al. 2021), with cosine similarity and temperature τ.

Both return `(loss, accuracy)`, accuracy being the share of anchors whose positive gets the highest logit
(the signal the adaptive curriculum reads).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from dataio.triplet_layout import DEFAULT_ALPHA


def _cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """All-pairs cosine similarity [len(a), len(b)]."""
    return F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).transpose(0, 1)


def _upcast(x: torch.Tensor) -> torch.Tensor:
    """Half precision to float32; float32/float64 kept as they are."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def _accuracy(logits: torch.Tensor) -> torch.Tensor:
    target = torch.arange(logits.size(0), device=logits.device)
    return (logits.argmax(dim=-1) == target).float().mean().detach()


def unsup_simcse_loss(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.05
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """Unsupervised SimCSE: row i of z1 and z2 are two dropout views of sentence i.

    loss_i = -log( exp(cos(z1_i, z2_i)/τ) / Σ_j exp(cos(z1_i, z2_j)/τ) ), averaged over the batch
    (float32, autocast off).
    """
    if z1.shape != z2.shape or z1.dim() != 2:
        raise ValueError(f"z1 and z2 must both be [batch, dim], got {tuple(z1.shape)} and {tuple(z2.shape)}")
    with torch.autocast(z1.device.type, enabled=False):
        logits = _cosine(_upcast(z1), _upcast(z2)) / temperature
        target = torch.arange(logits.size(0), device=logits.device)
        return F.cross_entropy(logits, target), _accuracy(logits)


def _alpha_tensor(alpha: float | Sequence | torch.Tensor, batch: int, k: int, like: torch.Tensor) -> torch.Tensor:
    if not isinstance(alpha, torch.Tensor):  # checked on the host: no device sync in the training loop
        import numpy as np

        values = np.asarray(alpha, dtype=np.float64)
        if np.any(values < 0) or not np.all(np.isfinite(values)):
            raise ValueError("alpha must be finite and >= 0")
    a = torch.as_tensor(alpha, dtype=like.dtype, device=like.device)
    if a.dim() == 1:
        a = a.unsqueeze(-1)  # the batch contract: a flat list is one α per row
    try:
        a = torch.broadcast_to(a, (batch, k))
    except RuntimeError:
        raise ValueError(f"alpha of shape {tuple(a.shape)} does not broadcast to [batch={batch}, k={k}]") from None
    return a


def sup_simcse_loss(anchor: torch.Tensor, positive: torch.Tensor, negatives: torch.Tensor | None = None,
                    alpha: float | Sequence | torch.Tensor = DEFAULT_ALPHA, temperature: float = 0.05,
                    exclude: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Supervised SimCSE with k hard negatives per anchor and SimCSE's α weighting.

    For anchor i the candidates are every positive h_j^+ and every hard negative h_jm^- in the batch:
    loss_i = -log( e^{s(i,i+)} / (Σ_j e^{s(i,j+)} + Σ_j Σ_m w_ijm e^{s(i,jm-)}) ), s = cos/τ,
    with w_iim = α_im for the anchor's own negatives and 1 for the other anchors' negatives (plain
    in-batch negatives). As in the reference code, log α is added to the own-negative logits; α = 0
    masks them to -inf, which removes the term exactly (zero gradient, no NaN).

    negatives: [B, k, d] or [B, d] (k = 1); alpha: scalar, [B] (one per row), [1, k] or [B, k].
    exclude: optional bool [B, B + B*k] (columns: the B positives, then negative m of row j at B + j*k + m):
    candidates that are not negatives of that row (the same text as its positive, e.g. another row's mined
    negative that repeats this row's sentence) are left out of its softmax. Its own positive cannot be.
    Computed in float32 with autocast off, whatever the encoder's precision.
    """
    with torch.autocast(anchor.device.type, enabled=False):
        return _sup_simcse_loss(anchor, positive, negatives, alpha, temperature, exclude)


def _sup_simcse_loss(anchor: torch.Tensor, positive: torch.Tensor, negatives: torch.Tensor | None,
                     alpha: float | Sequence | torch.Tensor, temperature: float,
                     exclude: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    if anchor.shape != positive.shape or anchor.dim() != 2:
        raise ValueError(f"anchor and positive must both be [batch, dim], got {tuple(anchor.shape)} and "
                         f"{tuple(positive.shape)}")
    anchor, positive = _upcast(anchor), _upcast(positive)
    pos_logits = _cosine(anchor, positive) / temperature  # [B, B]
    if negatives is None:
        logits = pos_logits
    else:
        negatives = _upcast(negatives)
        if negatives.dim() == 2:
            negatives = negatives.unsqueeze(1)
        batch, k, dim = negatives.shape
        if batch != anchor.size(0) or dim != anchor.size(1):
            raise ValueError(f"negatives must be [batch={anchor.size(0)}, k, dim={anchor.size(1)}], "
                             f"got {tuple(negatives.shape)}")
        neg_logits = (_cosine(anchor, negatives.reshape(batch * k, dim)) / temperature).view(batch, batch, k)
        a = _alpha_tensor(alpha, batch, k, neg_logits)
        own = torch.eye(batch, dtype=torch.bool, device=anchor.device).unsqueeze(-1).expand(batch, batch, k)
        log_w = torch.zeros_like(neg_logits)
        own_alpha = a.unsqueeze(1).expand(batch, batch, k)  # own_alpha[i, j, m] = α_im
        log_w = torch.where(own, torch.log(own_alpha.clamp(min=torch.finfo(a.dtype).tiny)), log_w)
        neg_logits = neg_logits + log_w
        neg_logits = neg_logits.masked_fill(own & (own_alpha == 0), float("-inf"))
        logits = torch.cat([pos_logits, neg_logits.reshape(batch, batch * k)], dim=1)
    if exclude is not None:
        if tuple(exclude.shape) != tuple(logits.shape):
            raise ValueError(f"exclude must be {tuple(logits.shape)}, got {tuple(exclude.shape)}")
        if exclude.device.type == "cpu" and bool(exclude.diagonal().any()):  # checked where it costs no sync
            raise ValueError("exclude cannot remove a row's own positive")
        logits = logits.masked_fill(exclude.to(device=logits.device, dtype=torch.bool), float("-inf"))
    target = torch.arange(logits.size(0), device=logits.device)
    return F.cross_entropy(logits, target), _accuracy(logits)


def distill_kl_loss(anchor: torch.Tensor, candidates: torch.Tensor, teacher_sims: torch.Tensor,
                    temperature: float = 0.05, teacher_temperature: float = 0.05,
                    exclude: torch.Tensor | None = None) -> torch.Tensor:
    """In-batch similarity distillation: KL(teacher ‖ student) between each anchor's softmax over the batch.

    For anchor i and the batch's candidates j (its positives, then any hard negatives, as in the contrastive
    loss): p_ij = softmax_j(t_ij / τ_t) from the teacher's cosines `teacher_sims` [B, C], q_ij = softmax_j(
    cos(anchor_i, candidate_j) / τ) from the student; loss = mean_i Σ_j p_ij (log p_ij - log q_ij). It moves
    the student's whole similarity structure toward the teacher's, not only the rank of the positive.
    `exclude` (bool [B, C]) leaves candidates out of both softmaxes (e.g. α = 0 padding columns).
    Computed in float32 with autocast off.
    """
    with torch.autocast(anchor.device.type, enabled=False):
        anchor, candidates = _upcast(anchor), _upcast(candidates)
        student = _cosine(anchor, candidates) / temperature
        teacher = teacher_sims.to(device=student.device, dtype=student.dtype) / teacher_temperature
        if tuple(teacher.shape) != tuple(student.shape):
            raise ValueError(f"teacher_sims must be {tuple(student.shape)}, got {tuple(teacher.shape)}")
        if exclude is not None:
            mask = exclude.to(device=student.device, dtype=torch.bool)
            student = student.masked_fill(mask, float("-inf"))
            teacher = teacher.masked_fill(mask, float("-inf"))
        log_q = F.log_softmax(student, dim=-1)
        log_p = F.log_softmax(teacher, dim=-1)
        p = log_p.exp()
        # 0 · log 0 = 0 for excluded candidates (where both logs are -inf)
        terms = torch.where(p > 0, p * (log_p - log_q), torch.zeros_like(p))
        return terms.sum(dim=-1).mean()


def margin_mse_loss(anchor: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor,
                    teacher_margin: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """MarginMSE (Hofstätter et al. 2020; GPL): the student's margin cos(a, p) - cos(a, n) regressed onto the
    teacher's `teacher_margin` for each (anchor, positive, negative) row: mean_i w_i (m_s,i - m_t,i)^2 / mean w.

    negative: [B, d] or [B, k, d] with teacher_margin [B] or [B, k]; `weight` (same shape as the margins, e.g.
    0 for padding columns) weighs the rows. Computed in float32 with autocast off.
    """
    with torch.autocast(anchor.device.type, enabled=False):
        anchor, positive, negative = _upcast(anchor), _upcast(positive), _upcast(negative)
        if negative.dim() == 2:
            negative = negative.unsqueeze(1)
        a = F.normalize(anchor, dim=-1)
        pos = (a * F.normalize(positive, dim=-1)).sum(-1, keepdim=True)  # [B, 1]
        neg = torch.einsum("bd,bkd->bk", a, F.normalize(negative, dim=-1))  # [B, k]
        target = teacher_margin.to(device=neg.device, dtype=neg.dtype).reshape(neg.shape)
        err = (pos - neg - target) ** 2
        if weight is None:
            return err.mean()
        w = weight.to(device=neg.device, dtype=neg.dtype).reshape(neg.shape)
        return (err * w).sum() / w.sum().clamp(min=torch.finfo(w.dtype).tiny)
