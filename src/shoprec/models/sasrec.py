"""SASRec+: a causal transformer over the user's item sequence, trained with full-softmax
cross-entropy over all items (Klenitskiy & Vasilev 2023: "Turning Dross Into Gold Loss: is
BERT4Rec really better than SASRec?"), with optional item-side features fused into the item
embedding so that items with few or no interactions still get a useful vector. Above
`SAMPLED_SOFTMAX_ITEMS` items it trains with a logQ-corrected sampled softmax instead (K
negatives shared by the batch, as gSASRec / eSASRec), so a step's time and memory do not grow
with the catalogue; scoring is always over the whole catalogue.

CPU speed choices, measured on the 2-core machine (figures in benchmarks/RESULTS.md, "What
made an epoch faster"): the output layer is scored only at real (non-padding) positions and
in row chunks, in a custom autograd function that never holds the float32 score matrix and
keeps the bf16 softmax for the backward pass where it fits, attention is
`scaled_dot_product_attention` at inference and three batched products in training (see
`attend`), dropout masks come from NumPy bytes (`FastDropout`), and the caller may run the
whole model under bf16 autocast.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from shoprec.models.base import Recommender
from shoprec.models.baselines import decayed_counts
from shoprec.models.repeat_head import RepeatHead, mixture_scores
from shoprec.sequences import PAD, pad_histories


# Up to this many bytes of softmax are kept from the forward pass for the backward pass
# (ML-1M: about 170 MB a batch in bf16); above it the backward pass rebuilds each chunk.
STORED_SOFTMAX_BYTES = 512 << 20
# A float32 [rows, items] chunk of the output layer holds at most this many bytes: large
# catalogues get fewer rows per chunk (ML-1M and the Instacart sample keep 2,048), so the
# loss's working memory has a fixed bound whatever the catalogue.
CHUNK_BYTES = 128 << 20

# loss="auto": the full softmax up to this many items, a sampled softmax above it (see
# `SampledSoftmaxCrossEntropy`). Chosen from step-time measurements (benchmarks/RESULTS.md,
# "Training memory"): the full softmax costs time and memory in proportion to the catalogue.
SAMPLED_SOFTMAX_ITEMS = 20_000
# Negatives drawn per training step, shared by every row of the batch.
SAMPLED_NEGATIVES = 4096
LOSSES = ("auto", "full", "sampled")
NEGATIVE_SAMPLERS = ("popularity", "uniform")


def resolve_loss(loss: str, n_items: int) -> str:
    """"full" or "sampled": `loss` itself, or for "auto" the catalogue-size switch."""
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, not {loss!r}")
    if loss == "auto":
        return "sampled" if n_items > SAMPLED_SOFTMAX_ITEMS else "full"
    return loss


class KeptSoftmax:
    """One reusable CPU buffer for the softmax an output layer keeps from its forward pass
    for its backward pass (at most `STORED_SOFTMAX_BYTES`): the largest matrix of a training
    step is then written into the same pages every step instead of being allocated afresh,
    which glibc would map and the kernel zero page by page (about a sixth of a float32 step
    with 5,000 items, measured), or which a heap that keeps freed memory would hold on to as
    it fragments. Each `take` invalidates the previous one (a token says which is current):
    a backward pass whose softmax was overwritten by a later forward pass rebuilds it
    instead. `release` (the model does it on `train(False)`) frees the buffer. On CUDA the
    caching allocator already reuses memory: `take` returns a fresh tensor there."""

    def __init__(self) -> None:
        self.buffer: torch.Tensor | None = None
        self.token = 0

    def take(self, rows: int, columns: int, dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, int]:
        """An uninitialised [rows, columns] matrix and its token."""
        self.token += 1
        if device.type != "cpu":
            return torch.empty(rows, columns, dtype=dtype, device=device), self.token
        need = rows * columns
        if self.buffer is None or self.buffer.dtype != dtype or self.buffer.numel() < need:
            self.buffer = None  # the old one goes first: never both at once
            # A quarter to spare, so that batches a little longer than the first do not
            # reallocate; never above the cap the caller checked `need` against.
            cap = STORED_SOFTMAX_BYTES * 8 // torch.finfo(dtype).bits
            self.buffer = torch.empty(max(need, min(need * 5 // 4, cap)), dtype=dtype)
        return self.buffer[:need].view(rows, columns), self.token

    def holds(self, token: int) -> bool:
        return token == self.token

    def release(self) -> None:
        self.buffer = None

    def __deepcopy__(self, memo: dict) -> "KeptSoftmax":
        return KeptSoftmax()  # a scratch buffer, never part of a copy

    def __getstate__(self) -> dict:
        return {"buffer": None, "token": 0}


def _kept_matrix(kept: KeptSoftmax | None, rows: int, columns: int, dtype: torch.dtype,
                 device: torch.device) -> tuple[torch.Tensor, int]:
    if kept is None:
        return torch.empty(rows, columns, dtype=dtype, device=device), 0
    return kept.take(rows, columns, dtype, device)


def _still_kept(kept: KeptSoftmax | None, token: int) -> bool:
    return kept is None or kept.holds(token)


class ChunkedSoftmaxCrossEntropy(torch.autograd.Function):
    """mean_i CE(softmax(h_i @ W^T), t_i) with the [M, N] logits built chunk by chunk:
    no float32 [M, N] matrix is ever held.

    Matmuls run in `compute_dtype` (bf16 when training under autocast); log-sum-exp and the
    softmax run in float32. Column 0 (padding) is never a candidate. When the whole softmax
    fits in `STORED_SOFTMAX_BYTES` in `compute_dtype`, the forward pass keeps it and the
    backward pass is two products (on the 2-core CPU the exp over [rows, items] dominates the
    loss, so computing it once is a quarter off the loss's time, measured); otherwise the
    backward pass rebuilds each chunk as exp(logits - log-sum-exp)."""

    @staticmethod
    def forward(ctx, hidden, weight, targets, chunk_rows: int, compute_dtype: torch.dtype,  # type: ignore[override]
                kept: KeptSoftmax | None = None, left_out: "LeftOut | None" = None):
        rows, columns = hidden.shape[0], weight.shape[0]
        chunk_rows = max(1, min(chunk_rows, CHUNK_BYTES // (4 * columns)))
        store = rows * columns * torch.finfo(compute_dtype).bits // 8 <= STORED_SOFTMAX_BYTES
        with torch.autocast(hidden.device.type, enabled=False):
            w = weight.to(compute_dtype)  # [N+1, d]
            log_norm = torch.empty(rows, dtype=torch.float32, device=hidden.device)
            picked = torch.empty(rows, dtype=torch.float32, device=hidden.device)
            softmax, token = _kept_matrix(kept, rows if store else 0, columns, compute_dtype, hidden.device)
            for s in range(0, rows, chunk_rows):
                logits = (hidden[s:s + chunk_rows].to(compute_dtype) @ w.T).float()  # [c, N+1]
                logits[:, PAD] = float("-inf")
                if left_out is not None:
                    logits.masked_fill_(left_out.block(s, s + chunk_rows, targets), float("-inf"))
                picked[s:s + chunk_rows] = logits.gather(1, targets[s:s + chunk_rows, None]).squeeze(1)
                top = logits.amax(1, keepdim=True)
                exps = logits.sub_(top).exp_()  # in place: one [c, N+1] buffer
                total = exps.sum(1, keepdim=True)
                log_norm[s:s + chunk_rows] = (top + total.log()).squeeze(1)
                if store:
                    softmax[s:s + chunk_rows] = exps.mul_(total.reciprocal_())
        # The softmax is not a saved tensor: it may live in `kept`'s buffer, which a later
        # forward pass may overwrite (then the token says so and backward rebuilds it).
        ctx.save_for_backward(hidden, weight, targets, log_norm)
        ctx.softmax, ctx.kept, ctx.token = softmax, kept, token
        ctx.chunk_rows, ctx.compute_dtype, ctx.stored, ctx.used = chunk_rows, compute_dtype, store, False
        ctx.left_out = left_out
        return (log_norm - picked).sum() / max(1, rows)

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        if ctx.used and ctx.stored:
            # The stored softmax became the gradient in place the first time.
            raise RuntimeError("ChunkedSoftmaxCrossEntropy supports one backward pass per forward pass")
        ctx.used = True
        hidden, weight, targets, log_norm = ctx.saved_tensors
        softmax, ctx.softmax = ctx.softmax, None
        cd, rows = ctx.compute_dtype, ctx.chunk_rows
        scale = grad_out.float() / max(1, hidden.shape[0])
        with torch.autocast(hidden.device.type, enabled=False):
            w = weight.to(cd)
            if ctx.stored and _still_kept(ctx.kept, ctx.token):
                probs = softmax  # softmax - one_hot(target), in place (PAD is already 0)
                probs[torch.arange(len(targets), device=targets.device), targets] -= 1.0
                grad_h = ((probs @ w).float() * scale).to(hidden.dtype)
                grad_w = (probs.T @ hidden.to(cd)).float()
                return grad_h, (grad_w * scale).to(weight.dtype), None, None, None, None, None
            grad_h = torch.empty_like(hidden)
            grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device)
            for s in range(0, hidden.shape[0], rows):
                h = hidden[s:s + rows].to(cd)
                probs = (h @ w.T).float().sub_(log_norm[s:s + rows, None]).exp_()  # softmax [c, N+1]
                probs[:, PAD] = 0.0
                if ctx.left_out is not None:  # columns the forward pass left out of the softmax
                    probs.masked_fill_(ctx.left_out.block(s, s + rows, targets), 0.0)
                t = targets[s:s + rows]
                probs[torch.arange(len(t), device=t.device), t] -= 1.0
                probs = probs.to(cd)
                # The scalar scale goes on the [c, d] products, not the [c, N+1] matrix.
                grad_h[s:s + rows] = ((probs @ w).float() * scale).to(hidden.dtype)
                grad_w += (probs.T @ h).float()
        return grad_h, (grad_w * scale).to(weight.dtype), None, None, None, None, None


class LeftOut:
    """Columns each output row's softmax leaves out: the items of the row's training window
    (`seen` [B, N+1], True = in the window), but never the row's own target. `owner` [M] says
    which window each scored row comes from."""

    def __init__(self, seen: torch.Tensor, owner: torch.Tensor) -> None:
        self.seen, self.owner = seen, owner

    @classmethod
    def of_windows(cls, inputs: torch.Tensor, targets: torch.Tensor, real: torch.Tensor,
                   columns: int) -> "LeftOut":
        """From a batch's [B, L] inputs and targets and its [B, L] real-target mask."""
        seen = torch.zeros(inputs.shape[0], columns, dtype=torch.bool, device=inputs.device)
        seen.scatter_(1, inputs, True).scatter_(1, targets, True)
        seen[:, PAD] = False
        return cls(seen, real.nonzero()[:, 0])

    def block(self, start: int, stop: int, targets: torch.Tensor) -> torch.Tensor:
        """[c, N+1] bool for rows start..stop: True where the column is left out."""
        block = self.seen[self.owner[start:stop]]
        block[torch.arange(block.shape[0], device=block.device), targets[start:stop]] = False
        return block


class SampledSoftmaxCrossEntropy(torch.autograd.Function):
    """mean_i CE over the candidates {t_i} + S: the row's target and K negatives S shared by
    the whole batch, drawn with replacement from q (the caller's sampler), logQ-corrected.

    A negative j scores h_i . w_j - log(K q_j) (its logit minus the log of its expected
    count in the sample): sum_{j in S} exp(h . w_j) / (K q_j) is then an unbiased estimate
    of the softmax denominator over the catalogue, so the loss tends to the full softmax
    cross-entropy as K grows whatever q is (popular items, sampled often, are corrected
    down). The target's own logit is not corrected (it is always a candidate, not sampled),
    and a negative that is the row's target is masked (-inf), so it never counts twice.

    Memory: [chunk_rows, K] working matrices; the [M, K] softmax is kept for the backward
    pass when it fits in `STORED_SOFTMAX_BYTES`, else rebuilt per chunk. Matmuls run in
    `compute_dtype`, log-sum-exp and softmax in float32, as `ChunkedSoftmaxCrossEntropy`."""

    @staticmethod
    def forward(ctx, hidden, positives, negatives, log_expected, negative_ids, targets,  # type: ignore[override]
                chunk_rows: int, compute_dtype: torch.dtype, kept: KeptSoftmax | None = None):
        rows, k = hidden.shape[0], negatives.shape[0]
        chunk_rows = max(1, min(chunk_rows, CHUNK_BYTES // (4 * k)))
        store = rows * k * torch.finfo(compute_dtype).bits // 8 <= STORED_SOFTMAX_BYTES
        with torch.autocast(hidden.device.type, enabled=False):
            w = negatives.to(compute_dtype)  # [K, d]
            correction = log_expected.float()  # [K]
            picked = (hidden.float() * positives.float()).sum(1)  # [M]: the targets' logits
            log_norm = torch.empty(rows, dtype=torch.float32, device=hidden.device)
            softmax, token = _kept_matrix(kept, rows if store else 0, k, compute_dtype, hidden.device)
            for s in range(0, rows, chunk_rows):
                logits = _sampled_logits(hidden[s:s + chunk_rows], w, correction, negative_ids,
                                         targets[s:s + chunk_rows], compute_dtype)  # [c, K]
                pos = picked[s:s + chunk_rows, None]
                top = torch.maximum(logits.amax(1, keepdim=True), pos)
                exps = logits.sub_(top).exp_()
                total = exps.sum(1, keepdim=True) + (pos - top).exp()
                log_norm[s:s + chunk_rows] = (top + total.log()).squeeze(1)
                if store:
                    softmax[s:s + chunk_rows] = exps.mul_(total.reciprocal_())
        ctx.save_for_backward(hidden, positives, negatives, log_expected, negative_ids, targets, picked, log_norm)
        ctx.softmax, ctx.kept, ctx.token = softmax, kept, token  # as in ChunkedSoftmaxCrossEntropy
        ctx.chunk_rows, ctx.compute_dtype, ctx.stored = chunk_rows, compute_dtype, store
        return (log_norm - picked).sum() / max(1, rows)

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        hidden, positives, negatives, log_expected, negative_ids, targets, picked, log_norm = ctx.saved_tensors
        softmax = ctx.softmax
        cd, chunk = ctx.compute_dtype, ctx.chunk_rows
        scale = grad_out.float() / max(1, hidden.shape[0])
        with torch.autocast(hidden.device.type, enabled=False):
            w = negatives.to(cd)
            # d loss_i / d picked_i = softmax of the target's column - 1.
            pos_coef = ((picked - log_norm).exp() - 1.0) * scale  # [M]
            grad_pos = (pos_coef[:, None] * hidden.float()).to(positives.dtype)
            grad_h = pos_coef[:, None] * positives.float()
            if ctx.stored and _still_kept(ctx.kept, ctx.token):
                grad_h += (softmax @ w).float() * scale
                grad_w = (softmax.T @ hidden.to(cd)).float()
            else:
                correction = log_expected.float()
                grad_w = torch.zeros(negatives.shape, dtype=torch.float32, device=negatives.device)
                for s in range(0, hidden.shape[0], chunk):
                    h = hidden[s:s + chunk]
                    probs = _sampled_logits(h, w, correction, negative_ids, targets[s:s + chunk], cd)
                    probs = probs.sub_(log_norm[s:s + chunk, None]).exp_().to(cd)
                    grad_h[s:s + chunk] += (probs @ w).float() * scale
                    grad_w += (probs.T @ h.to(cd)).float()
        return (grad_h.to(hidden.dtype), grad_pos, (grad_w * scale).to(negatives.dtype),
                None, None, None, None, None, None)


def _sampled_logits(
    hidden: torch.Tensor, negatives: torch.Tensor, correction: torch.Tensor, negative_ids: torch.Tensor,
    targets: torch.Tensor, compute_dtype: torch.dtype,
) -> torch.Tensor:
    """[c, K] float32: h . w_j - log(K q_j), -inf where negative j is the row's target."""
    logits = (hidden.to(compute_dtype) @ negatives.T).float().sub_(correction)
    return logits.masked_fill_(negative_ids[None, :] == targets[:, None], float("-inf"))


class FastDropout(nn.Module):
    """Dropout whose CPU keep-mask is one NumPy (PCG64) byte per element.

    torch's CPU `bernoulli_` draws a Mersenne-Twister number per element: it was a fifth of a
    training step on the 2-core machine (measured); bytes from NumPy cost about a fifth of
    that. The rate is rounded to a multiple of 1/256 (0.1 -> 26/256). On CUDA, and for rates
    the rounding would zero, this is `F.dropout`. The generator is seeded from torch's on
    first use, so runs repeat under one seed and DDP ranks (seeded apart) draw apart."""

    def __init__(self, p: float) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout rate must be in [0, 1), not {p}")
        self.p = p
        self.cutoff = round(p * 256)  # drop where byte < cutoff
        self._rng: np.random.Generator | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        if x.device.type != "cpu" or self.cutoff == 0:
            return F.dropout(x, self.p, True)
        if self._rng is None:
            self._rng = np.random.default_rng(int(torch.randint(2**62, ())))
        draws = torch.from_numpy(self._rng.integers(0, 256, x.numel(), dtype=np.uint8)).view(x.shape)
        return x * ((draws >= self.cutoff).to(x.dtype) * (256.0 / (256 - self.cutoff)))


class SwiGLU(nn.Module):
    """Gated feed-forward layer: W2 dropout(silu(W1 x) * W3 x) (Shazeer 2020)."""

    def __init__(self, hidden: int, inner: int, dropout: float) -> None:
        super().__init__()
        self.gate_and_value = nn.Linear(hidden, 2 * inner)
        self.drop = FastDropout(dropout)
        self.down = nn.Linear(inner, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, value = self.gate_and_value(x).chunk(2, dim=-1)
        return self.down(self.drop(F.silu(gate) * value))


class CausalBlock(nn.Module):
    """Pre-LayerNorm transformer block: x + Attn(LN(x)), then x + FFN(LN(x)).

    residual_gates: each branch is added as sigmoid(G x) * branch (a learned per-feature gate
    on the residual stream, the LiGR layer of eSASRec, Tikhonovich et al. 2025)."""

    def __init__(
        self, hidden: int, heads: int, dropout: float, ffn_multiplier: int = 1, attention_dropout: float = 0.0,
        residual_gates: bool = False, ffn_activation: str = "gelu",
    ) -> None:
        super().__init__()
        self.heads = heads
        self.attention_drop = FastDropout(attention_dropout)
        self.norm_attn = nn.LayerNorm(hidden)
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.out = nn.Linear(hidden, hidden)
        self.norm_ff = nn.LayerNorm(hidden)
        inner = hidden * ffn_multiplier
        if ffn_activation == "gelu":
            self.ff: nn.Module = nn.Sequential(
                nn.Linear(hidden, inner), nn.GELU(), FastDropout(dropout), nn.Linear(inner, hidden)
            )
        elif ffn_activation == "swiglu":
            self.ff = SwiGLU(hidden, inner, dropout)
        else:
            raise ValueError(f"ffn_activation must be 'gelu' or 'swiglu', not {ffn_activation!r}")
        self.gates = nn.Linear(hidden, 2 * hidden) if residual_gates else None
        self.drop = FastDropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        """mask [B, 1, L, L] (True = may attend); bias: the same as an additive [B, L, L]
        matrix (0 / -inf), given when training on CPU (see `attend`)."""
        batch, length, hidden = x.shape
        q, k, v = (
            self.qkv(self.norm_attn(x))
            .view(batch, length, 3, self.heads, hidden // self.heads)
            .permute(2, 0, 3, 1, 4)  # [3, B, H, L, dh]
        )
        attended = attend(q, k, v, mask, bias, self.attention_drop)  # [B, H, L, dh]
        branch = self.drop(self.out(attended.transpose(1, 2).reshape(batch, length, hidden)))
        if self.gates is None:
            x = x + branch
            return x + self.drop(self.ff(self.norm_ff(x)))
        x = x + torch.sigmoid(F.linear(x, self.gates.weight[:hidden], self.gates.bias[:hidden])) * branch
        gate = torch.sigmoid(F.linear(x, self.gates.weight[hidden:], self.gates.bias[hidden:]))
        return x + gate * self.drop(self.ff(self.norm_ff(x)))


class PostNormBlock(nn.Module):
    """The block of the original SASRec code as the reference SASRec+ runs it (pmixer's
    PyTorch port; antklen/sasrec-bert4rec-recsys23 `models.py`): Q = LN1(x); x = Q +
    Attn(queries from Q, keys and values from the un-normalised x); x = LN2(x); x = x +
    FFN(x) with FFN = drop(W2 relu(drop(W1 x))). The residual stream is re-normalised in
    every block (pre-LN never normalises it), LayerNorm eps is 1e-8, and the query/key/value
    projection starts from nn.MultiheadAttention's Xavier-uniform init (`reset_projection`),
    not N(0, 0.02). Measured against our pre-LN block in benchmarks/RESULTS.md ("the gap to
    the reference SASRec+")."""

    def __init__(self, hidden: int, heads: int, dropout: float, ffn_multiplier: int = 1,
                 attention_dropout: float = 0.0) -> None:
        super().__init__()
        self.heads = heads
        self.attention_drop = FastDropout(attention_dropout)
        self.norm_attn = nn.LayerNorm(hidden, eps=1e-8)
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.out = nn.Linear(hidden, hidden)
        self.norm_ff = nn.LayerNorm(hidden, eps=1e-8)
        inner = hidden * ffn_multiplier
        self.ff = nn.Sequential(nn.Linear(hidden, inner), FastDropout(dropout), nn.ReLU(),
                                nn.Linear(inner, hidden), FastDropout(dropout))

    def reset_projection(self) -> None:
        """nn.MultiheadAttention's init of its [3d, d] input projection (the model's
        N(0, 0.02) init runs first and would otherwise leave it 4x smaller)."""
        nn.init.xavier_uniform_(self.qkv.weight)
        nn.init.zeros_(self.qkv.bias)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        """As `CausalBlock.forward`."""
        batch, length, hidden = x.shape
        normed = self.norm_attn(x)
        weight, b = self.qkv.weight, self.qkv.bias
        shape = (batch, length, self.heads, hidden // self.heads)
        q = F.linear(normed, weight[:hidden], b[:hidden]).view(shape).transpose(1, 2)
        k, v = (F.linear(x, weight[hidden:], b[hidden:])
                .view(batch, length, 2, self.heads, hidden // self.heads).permute(2, 0, 3, 1, 4))
        attended = attend(q, k, v, mask, bias, self.attention_drop)  # [B, H, L, dh]
        x = normed + self.out(attended.transpose(1, 2).reshape(batch, length, hidden))
        x = self.norm_ff(x)
        return x + self.ff(x)


BLOCKS = ("pre_ln", "post_norm")
POSITIONS = ("newest", "oldest")


def attend(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor, bias: torch.Tensor | None,
    weight_dropout: nn.Module | None = None,
) -> torch.Tensor:
    """Masked attention over [B, H, L, dh] inputs.

    With `bias` (training on CPU): softmax(q k^T / sqrt(dh) + bias) v as three batched products,
    in the autocast dtype, with `weight_dropout` on the attention weights. On the 2-core
    machine its forward and backward take half the time of CPU `scaled_dot_product_attention`,
    whose backward pass dominates (measured at L = 200). Otherwise (inference, CUDA training):
    `scaled_dot_product_attention`, with its own weight dropout when the module is training."""
    if bias is None:
        rate = weight_dropout.p if weight_dropout is not None and weight_dropout.training else 0.0
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=rate)
    batch, heads, length, dh = q.shape
    flat = batch * heads
    scores = torch.baddbmm(
        bias[:, None].expand(batch, heads, length, length).reshape(flat, length, length),
        q.reshape(flat, length, dh), k.reshape(flat, length, dh).transpose(1, 2), alpha=dh ** -0.5,
    )
    weights = torch.softmax(scores, -1)
    if weight_dropout is not None:
        weights = weight_dropout(weights)
    return (weights @ v.reshape(flat, length, dh)).view(batch, heads, length, dh)


class SASRec(Recommender):
    """The sequential transformer recommender (see module docstring).

    Item vector = id embedding [+ category embedding] [+ projected MiniLM title embedding];
    the same vectors are the output layer (tied), so a feature-rich cold item is scored
    through its features."""

    kind: ClassVar[str] = "sasrec"
    trainable: ClassVar[bool] = True
    negative_probs: torch.Tensor  # a buffer (see __init__)

    def __init__(
        self,
        n_items: int,
        max_len: int = 200,
        hidden: int = 64,
        blocks: int = 2,
        heads: int = 1,
        dropout: float = 0.2,
        n_categories: int = 0,
        text_dim: int = 0,
        chunk_rows: int = 2048,
        ffn_multiplier: int = 1,
        repeat_weight: float = 0.0,
        repeat_decay: float = 1.0,
        attention_dropout: float = 0.0,
        residual_gates: bool = False,
        ffn_activation: str = "gelu",
        loss: str = "auto",
        negatives: int = SAMPLED_NEGATIVES,
        negative_sampling: str = "popularity",
        user_features: int = 0,
        repeat_head_hidden: int = 0,
        repeat_share: float = 1.0,
        block: str = "pre_ln",
        positions: str = "newest",
        repeat_history: int = 0,
    ) -> None:
        super().__init__(n_items)
        # The architecture: our pre-LN `CausalBlock` with positions counted back from the
        # newest item ("newest": the newest always at max_len-1), or the reference SASRec+'s
        # `PostNormBlock` with positions counted from the oldest item of the window ("oldest",
        # as right-padded inputs number them). The reference's pair trained faster on ML-1M.
        if block not in BLOCKS:
            raise ValueError(f"block must be one of {BLOCKS}, not {block!r}")
        if positions not in POSITIONS:
            raise ValueError(f"positions must be one of {POSITIONS}, not {positions!r}")
        self.block, self.positions = block, positions
        # The training loss: "full" softmax over the catalogue or "sampled" softmax (K =
        # `negatives` shared negatives drawn by `negative_sampling`, logQ-corrected); "auto"
        # is resolved here by catalogue size (`SAMPLED_SOFTMAX_ITEMS`) and `config()` records
        # the resolved choice. Scoring is always over the full catalogue.
        self.loss_kind = resolve_loss(loss, n_items)
        if negatives < 1:
            raise ValueError(f"negatives must be at least 1, not {negatives}")
        if negative_sampling not in NEGATIVE_SAMPLERS:
            raise ValueError(f"negative_sampling must be one of {NEGATIVE_SAMPLERS}, not {negative_sampling!r}")
        self.negatives, self.negative_sampling = int(negatives), negative_sampling
        # Sampling distribution over item indices (PAD 0): uniform until `prepare_training`
        # gives training counts. Not saved: it is training data, not part of the model.
        uniform = torch.ones(n_items + 1)
        uniform[PAD] = 0.0
        self.register_buffer("negative_probs", uniform / max(1, n_items), persistent=False)
        # Repeat-purchase data: scores of items the user already has get
        # repeat_weight * log(1 + time-decayed count over the WHOLE history) (each purchase
        # counts repeat_decay ** items bought since; 1 = plain counts), not only over the window
        # the transformer reads: on Instacart 92% of users have more items than the window, and
        # "buy again" over the whole history beat the transformer. 0 = off; both are set after
        # training by `fit.tune_repeat_weight` on validation (grocery baskets repeat a lot).
        if not 0.0 < repeat_decay <= 1.0:
            raise ValueError(f"repeat_decay must be in (0, 1], not {repeat_decay}")
        self.repeat_weight, self.repeat_decay = float(repeat_weight), float(repeat_decay)
        # How many of a history's newest items the repeat side (bonus or head) reads: the
        # feature store's `history_len`, what serving sends, so that evaluation reads exactly
        # what serving will. 0 = all it is given (bundles written before it).
        if repeat_history < 0:
            raise ValueError(f"repeat_history must be >= 0 (0 = the whole history), not {repeat_history}")
        self.repeat_history = int(repeat_history)
        self.max_len, self.hidden, self.blocks_n, self.heads = max_len, hidden, blocks, heads
        self.dropout_p, self.n_categories, self.text_dim = dropout, n_categories, text_dim
        self.chunk_rows, self.ffn_multiplier = chunk_rows, ffn_multiplier
        self.attention_dropout = attention_dropout  # on the attention weights, in training only
        self.residual_gates, self.ffn_activation = residual_gates, ffn_activation  # see CausalBlock
        self.item_embedding = nn.Embedding(n_items + 1, hidden, padding_idx=PAD)
        self.position_embedding = nn.Embedding(max_len, hidden)
        if n_categories:
            # Category per item index (0 = unknown), filled by `set_item_features`.
            self.register_buffer("item_category", torch.zeros(n_items + 1, dtype=torch.int64))
            self.category_embedding = nn.Embedding(n_categories + 1, hidden, padding_idx=0)
        if text_dim:
            self.register_buffer("item_text", torch.zeros(n_items + 1, text_dim))
            self.text_projection = nn.Linear(text_dim, hidden, bias=False)
        self._serving_items: tuple[list[torch.Tensor], tuple, torch.Tensor] | None = None  # see scoring_items
        self._kept_softmax = KeptSoftmax()  # the output layer's reusable buffer (training on CPU)
        self.input_dropout = FastDropout(dropout)
        if block == "post_norm" and (residual_gates or ffn_activation != "gelu"):
            raise ValueError("block 'post_norm' has its own ReLU feed-forward and no residual gates: "
                             "leave residual_gates and ffn_activation at their defaults")
        self.layers = nn.ModuleList(
            CausalBlock(hidden, heads, dropout, ffn_multiplier, attention_dropout, residual_gates, ffn_activation)
            if block == "pre_ln" else PostNormBlock(hidden, heads, dropout, ffn_multiplier, attention_dropout)
            for _ in range(blocks)
        )
        self.final_norm = nn.LayerNorm(hidden)
        # User context (`features.user_context`): the point-in-time user_stats of each
        # prediction, `user_features` standardized numbers, mapped to a vector added to the
        # hidden state just before the final norm (late fusion: serving knows the user's
        # statistics now, not as they stood at every earlier position of the window). 0 = off.
        self.user_features = int(user_features)
        if self.user_features:
            self.user_context = nn.Sequential(nn.Linear(self.user_features, hidden), nn.GELU(),
                                              nn.Linear(hidden, hidden))
        self.apply(self._init_weights)
        for layer in self.layers:
            if isinstance(layer, PostNormBlock):
                layer.reset_projection()
        # Repeat-purchase data, where validation chose it over the bonus (`fit.choose_repeat_side`):
        # a learned repeat head (`models.repeat_head`, `repeat_head_hidden` hidden units) scores the
        # user's past items from their session features, mixed with the transformer's softmax
        # as RepeatNet does (`repeat_share` of the probability on the repeat side). It reads
        # where each history's sessions start, so scoring then needs them (`needs_sessions`).
        self.repeat_head_hidden, self.repeat_share = 0, float(repeat_share)
        if repeat_head_hidden:
            self.attach_repeat_head(RepeatHead(int(repeat_head_hidden)), repeat_share)

    def attach_repeat_head(self, head: RepeatHead, share: float) -> None:
        """Score with `head` on the repeat side from now on (the bonus is then off)."""
        if not 0.0 <= share <= 1.0:
            raise ValueError(f"repeat_share must be in [0, 1], not {share}")
        self.repeat_scorer = head
        self.repeat_head_hidden, self.repeat_share = head.hidden, float(share)
        self.repeat_weight = 0.0

    @property
    def needs_sessions(self) -> bool:
        """Whether scoring needs each history's session openings (a repeat head reads them)."""
        return bool(self.repeat_head_hidden)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)
            if isinstance(module, nn.Embedding) and module.padding_idx is not None:
                with torch.no_grad():
                    module.weight[module.padding_idx].zero_()

    def config(self) -> dict[str, Any]:
        return {
            "n_items": self.n_items, "max_len": self.max_len, "hidden": self.hidden,
            "blocks": self.blocks_n, "heads": self.heads, "dropout": self.dropout_p,
            "n_categories": self.n_categories, "text_dim": self.text_dim,
            "chunk_rows": self.chunk_rows, "ffn_multiplier": self.ffn_multiplier,
            "repeat_weight": self.repeat_weight, "repeat_decay": self.repeat_decay,
            "attention_dropout": self.attention_dropout,
            "residual_gates": self.residual_gates, "ffn_activation": self.ffn_activation,
            "loss": self.loss_kind, "negatives": self.negatives, "negative_sampling": self.negative_sampling,
            "user_features": self.user_features,
            "repeat_head_hidden": self.repeat_head_hidden, "repeat_share": self.repeat_share,
            "block": self.block, "positions": self.positions, "repeat_history": self.repeat_history,
        }

    @classmethod
    def from_state(cls, config: dict[str, Any], state: dict[str, torch.Tensor]) -> "SASRec":
        # Bundles written before the sampled softmax were all trained with the full one.
        return super().from_state({"loss": "full", **config}, state)  # type: ignore[return-value]

    def prepare_training(self, sequences: Sequence[np.ndarray]) -> None:
        """Called by the training loop with the training sequences: with the sampled softmax
        and popularity sampling, negatives are drawn in proportion to 1 + each item's count."""
        if self.loss_kind != "sampled" or self.negative_sampling != "popularity":
            return
        flat = np.concatenate([np.asarray(s, dtype=np.int64) for s in sequences] or [np.zeros(0, np.int64)])
        counts = np.bincount(flat[(flat > PAD) & (flat <= self.n_items)], minlength=self.n_items + 1)
        weights = torch.as_tensor(counts, dtype=torch.float64) + 1.0
        weights[PAD] = 0.0
        self.negative_probs = (weights / weights.sum()).float().to(self.negative_probs.device)

    def sample_negatives(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """(K item indices drawn with replacement, log of each one's expected count K q_j)."""
        k = self.negatives
        if self.negative_sampling == "uniform":
            ids = torch.randint(1, self.n_items + 1, (k,), device=device)
            return ids, torch.full((k,), math.log(k / self.n_items), device=device)
        probs = self.negative_probs.to(device)
        ids = torch.multinomial(probs, k, replacement=True)
        return ids, torch.log(probs[ids].double() * k).float()

    def set_item_features(
        self, category: torch.Tensor | None = None, text: torch.Tensor | None = None
    ) -> "SASRec":
        """category: [N+1] int (0 unknown); text: [N+1, text_dim] float (row 0 zeros)."""
        self._serving_items = None
        if category is not None:
            if not self.n_categories:
                raise ValueError("model built with n_categories=0 cannot take categories")
            self.item_category = category.to(torch.int64).clone()
        if text is not None:
            if not self.text_dim:
                raise ValueError("model built with text_dim=0 cannot take text embeddings")
            self.item_text = text.float().clone()
        return self

    def item_matrix(self) -> torch.Tensor:
        """[N+1, d]: every item's vector (row 0, padding, is zero)."""
        vectors = self.item_embedding.weight
        if self.n_categories:
            vectors = vectors + self.category_embedding(self.item_category)
        if self.text_dim:
            vectors = vectors + self.text_projection(self.item_text)
        keep = torch.ones(self.n_items + 1, 1, device=vectors.device, dtype=vectors.dtype)
        keep[PAD] = 0.0
        return vectors * keep

    def train(self, mode: bool = True) -> "SASRec":
        self._serving_items = None  # weights are about to change: never reuse a stale matrix
        if not mode:
            self._kept_softmax.release()  # validation, serving: the training buffer goes
        return super().train(mode)

    def _apply(self, fn, *args, **kwargs):  # type: ignore[no-untyped-def]
        self._serving_items = None  # .to() / .float() replace tensors: rebuild from the new ones
        return super()._apply(fn, *args, **kwargs)

    def scoring_items(self) -> torch.Tensor:
        """`item_matrix()` for inference, computed once and reused until a weight or buffer
        changes in place (tensor version counters tell) or is replaced (`set_item_features`,
        `.to()` and `train()` drop the copy): with MiniLM titles it is an [N, 384] x [384, d]
        product, far more than scoring one user costs."""
        if self.training or torch.is_grad_enabled():
            return self.item_matrix()
        cached = self._serving_items
        if cached is not None:
            tensors, key, matrix = cached
            if tuple(t._version for t in tensors) == key:
                return matrix
        tensors = list(self.parameters()) + list(self.buffers())
        matrix = self.item_matrix().detach()
        self._serving_items = (tensors, tuple(t._version for t in tensors), matrix)
        return matrix

    def encode(self, inputs: torch.Tensor, items: torch.Tensor | None = None,
               context: torch.Tensor | None = None) -> torch.Tensor:
        """inputs [B, L] left-padded item indices -> hidden states [B, L, d]. context: the user
        context of each position's prediction, [B, L, F], or [B, F] for every position (scoring
        reads the last one); None with `user_features` reads as the mean training user (zeros)."""
        items = self.item_matrix() if items is None else items
        batch, length = inputs.shape
        real = inputs != PAD  # [B, L]
        if self.positions == "newest":
            # Positions count back from the right end, so the newest item always sits at max_len-1.
            positions = torch.arange(self.max_len - length, self.max_len, device=inputs.device)
        else:  # from the oldest real item of each row at 0 (padding, never attended, gets 0 too)
            positions = (real.cumsum(1) - 1).clamp_(min=0)
        x = F.embedding(inputs, items) * math.sqrt(self.hidden) + self.position_embedding(positions)
        x = self.input_dropout(x) * real.unsqueeze(-1)
        causal = torch.ones(length, length, dtype=torch.bool, device=inputs.device).tril()
        # Attend to earlier real items; every position also sees itself, so padding rows
        # (never scored) do not produce all-masked NaN rows.
        mask = causal & (real[:, None, :] | torch.eye(length, dtype=torch.bool, device=inputs.device))
        bias = None
        if torch.is_grad_enabled() and inputs.device.type == "cpu":
            dtype = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else x.dtype
            bias = torch.zeros(mask.shape, dtype=dtype, device=x.device).masked_fill_(~mask, float("-inf"))
        mask = mask.unsqueeze(1)  # [B, 1, L, L]
        for layer in self.layers:
            x = layer(x, mask, bias)
        if self.user_features:
            if context is None:  # unknown: the mean training user (standardized zeros)
                context = torch.zeros(batch, self.user_features)
            context = context.to(device=x.device, dtype=self.user_context[0].weight.dtype)
            fused = self.user_context(context if context.dim() == 3 else context[:, None, :])  # [B, L or 1, d]
            x = x + fused.to(x.dtype)
        return self.final_norm(x)

    def forward(self, inputs: torch.Tensor, targets: torch.Tensor,
                context: torch.Tensor | None = None, leave_out_window: bool = False) -> torch.Tensor:
        """Mean cross-entropy over the real target positions of the batch: full softmax over
        the catalogue, or the sampled softmax (`loss_kind`). context: [B, L, F], the user
        context of each target (see `encode`). leave_out_window: each position's softmax
        leaves out the other items of its window (`TrainConfig.loss_leaves_out_seen`; full
        softmax only)."""
        items = self.item_matrix()
        hidden = self.encode(inputs, items, context)  # [B, L, d]
        real = targets != PAD
        states = hidden[real]  # [M, d]: only positions with a target reach the output layer
        wanted = targets[real]
        compute_dtype = torch.get_autocast_dtype(inputs.device.type) if torch.is_autocast_enabled(inputs.device.type) else torch.float32
        left_out = None
        if leave_out_window:
            if self.loss_kind != "full":
                raise ValueError("leaving the window's items out of the softmax needs the full softmax (loss='full')")
            left_out = LeftOut.of_windows(inputs, targets, real, self.n_items + 1)
        if self.loss_kind == "sampled":
            ids, log_expected = self.sample_negatives(inputs.device)
            return SampledSoftmaxCrossEntropy.apply(
                states, items[wanted], items[ids], log_expected, ids, wanted, self.chunk_rows, compute_dtype,
                self._kept_softmax,
            )
        return ChunkedSoftmaxCrossEntropy.apply(states, items, wanted, self.chunk_rows, compute_dtype,
                                                self._kept_softmax, left_out)

    @torch.no_grad()
    def score_all(self, histories: Sequence[np.ndarray], context: np.ndarray | torch.Tensor | None = None,
                  starts: Sequence[np.ndarray] | None = None) -> torch.Tensor:
        """context: [B, F] user context of each history (`features.user_context`), when the
        model reads one (`user_features`). starts: per history, True where an event opens a
        session (`sequences.session_starts`), needed when the model has a repeat head."""
        return self._scores(histories, None, context, starts)

    @torch.no_grad()
    def score_items(self, histories: Sequence[np.ndarray], items: torch.Tensor,
                    starts: Sequence[np.ndarray] | None = None) -> torch.Tensor:
        """Only the columns `items`: one [B, d] x [d, R] product instead of the whole catalogue
        (with a repeat head, whose mixture normalises over every item, all columns are scored).
        starts: as for `score_all`."""
        return self._scores(histories, items, None, starts)

    def _scores(self, histories: Sequence[np.ndarray], columns: torch.Tensor | None,
                context: np.ndarray | torch.Tensor | None = None,
                starts: Sequence[np.ndarray] | None = None) -> torch.Tensor:
        """[B, N+1] scores (columns None) or [B, R] for the item indices `columns`: padding is
        -inf, an empty history scores every item 0 (ties, broken by index), plus the repeat bonus;
        with a repeat head, the log of its mixture with the transformer's softmax."""
        if self.repeat_head_hidden:
            if starts is None or len(starts) != len(histories):
                raise ValueError("this model's repeat head reads where each history's sessions start: "
                                 "pass starts, one bool array per history")
            explore = self.transformer_scores(histories, None, context)
            repeat = self.repeat_scorer.item_scores(self.repeat_view(histories), self.repeat_view(starts))
            mixed = mixture_scores(repeat, explore, self.repeat_share)
            return mixed if columns is None else mixed[:, columns.cpu()]
        scores = self.transformer_scores(histories, columns, context)
        if self.repeat_weight:
            columns = torch.arange(self.n_items + 1) if columns is None else columns.cpu()
            scores += self.repeat_bonus(histories)[:, columns]
        return scores

    def transformer_scores(self, histories: Sequence[np.ndarray], columns: torch.Tensor | None = None,
                           context: np.ndarray | torch.Tensor | None = None) -> torch.Tensor:
        """`_scores` without the repeat bonus: the transformer's own logits over the newest
        `max_len` items of each history (CPU, [B, N+1] or [B, R])."""
        device = self.item_embedding.weight.device
        inputs = pad_histories(histories, self.max_len).to(device)
        matrix = self.scoring_items()
        if not self.user_features:
            context = None  # a model without user context ignores one (older bundles keep serving)
        if context is not None:
            context = torch.as_tensor(np.asarray(context, dtype=np.float32) if not torch.is_tensor(context) else context)
            if context.shape != (len(histories), self.user_features):
                raise ValueError(f"user context must be [{len(histories)}, {self.user_features}] "
                                 f"(one row per history), not {list(context.shape)}")
        last = self.encode(inputs, matrix, context)[:, -1].float()  # [B, d]: the state after the newest item
        if columns is None:
            columns = torch.arange(self.n_items + 1)
            scores = last @ matrix.float().T  # [B, N+1]
        else:
            scores = last @ matrix[columns.to(device)].float().T  # [B, R]
        empty = torch.as_tensor([len(h) == 0 for h in histories], device=device)
        if empty.any():
            scores[empty] = 0.0
        scores[:, columns.to(device) == PAD] = float("-inf")
        return scores.cpu()

    def repeat_view(self, sequences: Sequence[np.ndarray]) -> Sequence[np.ndarray]:
        """What the repeat side reads of per-history sequences (items, or session openings):
        the newest `repeat_history` entries of each, or all of them."""
        if not self.repeat_history:
            return sequences
        return [np.asarray(sequence)[-self.repeat_history:] for sequence in sequences]

    def repeat_bonus(self, histories: Sequence[np.ndarray], weight: float | None = None,
                     decay: float | None = None) -> torch.Tensor:
        """[B, N+1]: weight * log(1 + sum over the item's purchases of decay ** items bought
        since) over the newest `repeat_history` items of each history (0: all of it; default:
        the model's repeat_weight and repeat_decay). Serving passes the feature store's
        history, as long as `repeat_history`, so it scores exactly as evaluation."""
        weight = self.repeat_weight if weight is None else weight
        counts = decayed_counts(self.repeat_view(histories), self.n_items, self.repeat_decay if decay is None else decay)
        counts.data = np.log1p(counts.data) * weight
        bonus = torch.from_numpy(np.asarray(counts.todense(), dtype=np.float32))
        bonus[:, PAD] = 0.0
        return bonus
