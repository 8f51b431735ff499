"""The two-pass "vocab-block" strategy: no [V, d] accumulator, so low-precision heads meet the memory target.

`strategy="token_chunks"` (the default engine, chunked.py) walks token chunks and must *accumulate* the
head gradient dW over them: for bf16 / fp16 heads that costs an fp32 [V, d] buffer plus a transient
low-precision [V, d] product per chunk. This strategy walks vocabulary blocks instead, so every block of
dW is produced by one matmul over all kept rows and written once, in the head dtype (the matmul itself
accumulates in fp32). With N kept rows:

    pass 1, token chunks of C rows (forward only):
        Zc = Hc Wᵀ (+ b), softcap      one [C, V] chunk at a time
        lse [N] (fp32), per-row loss and nll (label smoothing uses the row mean of the logits)
    pass 2, vocabulary blocks of Vb columns (H = the kept rows of hidden, gathered once):
        Zb = H Wbᵀ (+ bb)              [N, Vb] in the head dtype
        per row tile, in fp32: Zb <- c_i (exp(s(Zb) - lse) - (1-eps)·onehot - eps/V) (· (1 - tanh²))
        dW[Vb] = Zbᵀ H                 written once, head dtype
        dH32 += Zb Wb                  fp32 [N, d] accumulator, cast into dH at the end
        db[Vb] = Σ_rows Zb

FLOPs 8·N·d·V (the logits are computed twice, as in Cut Cross-Entropy) instead of 6·N·d·V. The logit
gradient is rounded to the head dtype before the two gradient matmuls, exactly where the token-chunk
engine rounds it. A block of C·V elements (the same size as one token chunk) is used in both passes.
"""

from __future__ import annotations

import torch

from .chunked import CPU_CHUNK_BYTES, CUDA_CHUNK_BYTES, PrecomputedGradFunction, chunk_loss, cast_head, stored_dtype

# fp32 working set of one row tile in pass 2 (the block is converted to fp32 a tile at a time).
TILE_BYTES = 8 << 20


def auto_token_chunk(n_rows: int, vocab: int, *, device: torch.device, dtype: torch.dtype) -> int:
    """Rows per pass-1 chunk: an fp32 [C, V] chunk (+ its low-precision matmul output) within the base
    budget (64 MiB on CPU, 1 GiB on CUDA; env PLW_LOSS_CHUNK_MB_CPU / _CUDA). Unlike the token-chunk
    engine, the CPU budget is not raised to the size of the head gradient: this strategy has no
    accumulator to amortise, and the chunk is part of its peak memory."""
    budget = CUDA_CHUNK_BYTES if device.type == "cuda" else CPU_CHUNK_BYTES
    per_row = vocab * (4 + (dtype.itemsize if dtype.itemsize < 4 else 0))
    rows = max(8, (budget // per_row) // 8 * 8)
    return max(1, min(rows, n_rows))


def vocab_block_size(chunk_rows: int, n_rows: int, vocab: int) -> int:
    """Columns per pass-2 block: [n_rows, Vb] holds as many elements as one [chunk_rows, V] chunk."""
    vb = (chunk_rows * vocab) // max(n_rows, 1)
    if vb >= 64:
        vb = vb // 8 * 8
    return max(1, min(vb, vocab))


class VocabBlockLinearCrossEntropy(PrecomputedGradFunction):
    """Same contract as ChunkedLinearCrossEntropy: returns (loss, per-row nll, tracked nll)."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, rows, y, coef, track_rows, track_y, eps, softcap, chunk,
                grad_enabled, mm_dtype):
        d = hidden.shape[-1]
        h2 = hidden.reshape(-1, d)
        V = weight.shape[0]
        dev = hidden.device
        w_mm, b_mm = cast_head(weight, bias, mm_dtype)
        compute_dtype = torch.promote_types(mm_dtype, torch.float32)
        need_dh, need_dw, need_db = PrecomputedGradFunction.needed_grads(ctx, bias, grad_enabled)
        want_grad = need_dh or need_dw or need_db
        n = rows.numel()

        # ---- pass 1: token chunks, forward only -> loss, nll, lse
        buf = torch.empty(min(chunk, max(n, track_rows.numel(), 1)), V, dtype=compute_dtype, device=dev)
        loss = torch.zeros((), dtype=torch.float64, device=dev)
        nll_out = torch.empty(n, dtype=compute_dtype, device=dev)
        lse = torch.empty(n, dtype=compute_dtype, device=dev)
        for s in range(0, n, chunk):
            hc = h2.index_select(0, rows[s:s + chunk]).to(mm_dtype)
            per_row, nll, _, _, _, lse_c = chunk_loss(hc, w_mm, b_mm, y[s:s + chunk], eps, softcap,
                                                       False, buf)
            nll_out[s:s + chunk] = nll
            lse[s:s + chunk] = lse_c
            loss += (coef[s:s + chunk].double() * per_row.double()).sum()
            del hc, per_row, nll, lse_c
        track_out = torch.empty(track_rows.numel(), dtype=compute_dtype, device=dev)
        for s in range(0, track_rows.numel(), chunk):
            hc = h2.index_select(0, track_rows[s:s + chunk]).to(mm_dtype)
            track_out[s:s + chunk] = chunk_loss(hc, w_mm, b_mm, track_y[s:s + chunk], 0.0, softcap,
                                                 False, buf)[1]
        del buf

        dh = dw = db = None
        if want_grad and n > 0:
            dh32, dw, db = _vocab_pass(h2, w_mm, b_mm, rows, y, coef, lse, eps, softcap,
                                       vocab_block_size(chunk, n, V), need_dh, need_dw, need_db,
                                       stored_dtype(weight.dtype))
            if need_dh:
                dh = torch.zeros(hidden.shape, dtype=stored_dtype(hidden.dtype), device=dev)
                dh2 = dh.view(-1, d)
                step = max(1, TILE_BYTES // (4 * d))
                for s in range(0, n, step):  # cast tile by tile: no second [N, d] transient
                    dh2.index_copy_(0, rows[s:s + step], dh32[s:s + step].to(dh.dtype))
                del dh32
        elif want_grad:  # nothing kept: every gradient is zero
            dh = torch.zeros_like(hidden, dtype=stored_dtype(hidden.dtype)) if need_dh else None
            dw = torch.zeros_like(weight, dtype=stored_dtype(weight.dtype)) if need_dw else None
            db = torch.zeros_like(bias, dtype=stored_dtype(bias.dtype)) if need_db else None
        del w_mm, b_mm
        PrecomputedGradFunction.save_grads(ctx, hidden, weight, bias, dh, dw, db)
        ctx.mark_non_differentiable(nll_out, track_out)
        return loss.to(compute_dtype), nll_out, track_out


def _vocab_pass(h2, weight, bias, rows, y, coef, lse, eps, softcap, vb, need_dh, need_dw, need_db,
                dw_dtype):
    """Pass 2: the gradients, one vocabulary block at a time. Returns (dH32 [N, d] or None, dW, db).

    `weight` / `bias` are already in the matmul dtype; dW is written in `dw_dtype` (the head's own).
    """
    V, d = weight.shape
    n = rows.numel()
    dev, dt = h2.device, weight.dtype
    compute_dtype = torch.promote_types(dt, torch.float32)
    low = dt != compute_dtype
    H = h2.index_select(0, rows).to(dt)  # [N, d], matmul dtype
    dw = torch.empty(weight.shape, dtype=dw_dtype, device=dev) if need_dw else None
    dh32 = torch.zeros(n, d, dtype=compute_dtype, device=dev) if need_dh else None
    db = torch.zeros(V, dtype=compute_dtype, device=dev) if need_db else None
    blk_store = torch.empty(n * vb, dtype=dt, device=dev)
    # Row tiles keep the fp32 work cache-sized on CPU; on a GPU each tile costs ~10 kernel launches,
    # so there the tile is the whole block (its fp32 copy fits the chunk budget pass 1 just freed).
    tile_bytes = CUDA_CHUNK_BYTES if dev.type == "cuda" else TILE_BYTES
    tile = max(1, tile_bytes // (4 * vb * (2 if softcap is not None else 1)))
    lse2 = lse[:, None]
    c_onehot = (-(1 - eps) * coef)
    c_smooth = (coef * (eps / V))[:, None] if eps else None
    for v0 in range(0, V, vb):
        v1 = min(V, v0 + vb)
        w_b = weight[v0:v1]
        blk = blk_store[: n * (v1 - v0)].view(n, v1 - v0)
        if bias is None:
            torch.mm(H, w_b.t(), out=blk)
        else:
            torch.addmm(bias[v0:v1], H, w_b.t(), out=blk)
        for s in range(0, n, tile):
            e = min(n, s + tile)
            z = blk[s:e].to(compute_dtype) if low else blk[s:e]  # fp32 copy of the tile, or in place
            cap = None
            if softcap is not None:
                z.div_(softcap).tanh_()
                cap = 1 - z * z
                z.mul_(softcap)
            z.sub_(lse2[s:e]).exp_().mul_(coef[s:e, None])
            if c_smooth is not None:
                z.sub_(c_smooth[s:e])
            # The one-hot term for targets inside this block, without a host sync: rows whose target
            # lies elsewhere add 0 to a clamped column.
            yt = y[s:e]
            inside = (yt >= v0) & (yt < v1)
            col = (yt - v0).clamp_(0, v1 - v0 - 1)
            z.scatter_add_(1, col[:, None], torch.where(inside, c_onehot[s:e], 0.0)[:, None].to(z.dtype))
            if cap is not None:
                z.mul_(cap)
            del cap
            if db is not None:
                db[v0:v1] += z.sum(0)
            if low:
                blk[s:e].copy_(z)  # rounded to the head dtype, as the token-chunk engine does
            del z
        if dw is not None:
            if dw.dtype == dt:
                torch.mm(blk.t(), H, out=dw[v0:v1])
            else:  # fp32 master weight: the block's low-precision product, stored once in fp32
                dw[v0:v1].copy_(torch.mm(blk.t(), H))
        if dh32 is not None:
            if low:  # no mixed-dtype addmm_: tile the low-precision product (one piece on a GPU)
                step = n if dev.type == "cuda" else max(1, TILE_BYTES // (4 * d))
                for s in range(0, n, step):
                    dh32[s:s + step].add_(torch.mm(blk[s:s + step], w_b))
            else:
                dh32.addmm_(blk, w_b)
    return dh32, dw, db
