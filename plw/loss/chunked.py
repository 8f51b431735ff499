"""The fused, chunked linear cross-entropy: logits are never materialised beyond one chunk.

Because the per-token weights are known in the forward pass, the forward also computes the gradients
(6·N·d·V FLOPs in all: the logits 2NdV, then dH = G·W and dW = Gᵀ·H, 2NdV each); backward only scales
them by the upstream gradient. Per chunk of C kept rows:

    Zc = Hc Wᵀ (+ b)                       [C, V], turned into fp32 in place
    Zc = s·tanh(Zc / s)                    optional softcap (keeps 1 - tanh² for the chain rule)
    lse, nll, smoothed loss from Zc
    Zc <- c_i (softmax - (1-eps)·onehot - eps/V) (· (1 - tanh²))      in place: the logit gradient
    dH[rows] = Zc W ;  dW += Zcᵀ Hc ;  db += Σ Zc

where c_i = w_i / Z. Rows with label -100 or weight 0 are dropped before any matmul; extra memory is
O(N·d + V·d) for the two gradients plus one [C, V] chunk.
"""

from __future__ import annotations

import os

import torch

# The engine's device defaults, in one table: what strategy="auto" means and the base budget (MiB) of
# one chunk of fp32 logits (and its softcap factor). The CUDA row has never been measured: it is to be
# set from the numbers of bench/gpu_check.sh (docs/benchmarks.md, "GPU check"). Env
# PLW_LOSS_CHUNK_MB_CPU / PLW_LOSS_CHUNK_MB_CUDA override the budgets.
DEVICE_DEFAULTS = {
    "cpu": {"strategy": "token_chunks", "chunk_mb": 64},
    "cuda": {"strategy": "token_chunks", "chunk_mb": 1024},  # provisional (unmeasured)
}
CPU_CHUNK_BYTES = int(os.environ.get("PLW_LOSS_CHUNK_MB_CPU", DEVICE_DEFAULTS["cpu"]["chunk_mb"])) << 20
CUDA_CHUNK_BYTES = int(os.environ.get("PLW_LOSS_CHUNK_MB_CUDA", DEVICE_DEFAULTS["cuda"]["chunk_mb"])) << 20


def default_strategy(device: torch.device) -> str:
    """The strategy "auto" resolves to on `device` (CPU's for devices the table does not name)."""
    return DEVICE_DEFAULTS.get(device.type, DEVICE_DEFAULTS["cpu"])["strategy"]


def auto_chunk_size(n_rows: int, vocab: int, *, device: torch.device, dtype: torch.dtype,
                    softcap: bool, hidden_size: int = 0) -> int:
    """Rows per chunk so that the chunk's working set fits the device's budget (multiple of 8).

    On CPU the budget grows to the size of the head's fp32 gradient when that is larger: the chunk then
    costs at most what the gradient already does, and fewer, taller chunks re-read that gradient less.
    """
    if device.type == "cuda":
        budget = CUDA_CHUNK_BYTES
    else:
        budget = max(CPU_CHUNK_BYTES, vocab * hidden_size * 4)
    per_row = vocab * 4 * (2 if softcap else 1)
    if dtype.itemsize < 4:
        per_row += vocab * dtype.itemsize  # the low-precision copy of the gradient chunk for the matmuls
    rows = max(8, (budget // per_row) // 8 * 8)
    return max(1, min(rows, n_rows))


def stored_dtype(dtype: torch.dtype) -> torch.dtype:
    """Storage of a precomputed gradient until backward: fp16 ones stay fp32 until the upstream
    gradient (a GradScaler's loss scale, say) has been applied, or they would underflow."""
    return torch.float32 if dtype == torch.float16 else dtype


def cast_head(weight: torch.Tensor, bias: torch.Tensor | None, dtype: torch.dtype):
    """The head (and bias) in the matmul dtype, without a copy when it already is."""
    w = weight if weight.dtype == dtype else weight.to(dtype)
    b = bias if bias is None or bias.dtype == dtype else bias.to(dtype)
    return w, b


def chunk_loss(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, y: torch.Tensor,
               eps: float, softcap: float | None, want_grad: bool, buf: torch.Tensor):
    """Logits of one chunk -> (per-row smoothed loss, per-row nll, exp(z - max), sumexp, softcap factor, lse).

    `buf` is the reused [C, V] compute-dtype chunk buffer: reusing it avoids fresh page faults per chunk.
    """
    z = buf[: h.shape[0]]
    if h.dtype == buf.dtype:
        torch.mm(h, weight.t(), out=z) if bias is None else torch.addmm(bias, h, weight.t(), out=z)
    else:  # low precision: the matmul runs in the input dtype, softmax and gradient in fp32
        z.copy_(torch.mm(h, weight.t()) if bias is None else torch.addmm(bias, h, weight.t()))
    cap_grad = None
    if softcap is not None:
        z.div_(softcap).tanh_()
        if want_grad:
            cap_grad = 1 - z * z
        z.mul_(softcap)
    zy = z.gather(1, y[:, None]).squeeze(1)
    zmean = z.mean(1) if eps else None
    m = z.amax(1, keepdim=True)
    z.sub_(m).exp_()
    sumexp = z.sum(1)
    lse = m.squeeze(1) + sumexp.log()
    nll = lse - zy
    per_row = nll if not eps else lse - (1 - eps) * zy - eps * zmean
    return per_row, nll, z, sumexp, cap_grad, lse


class PrecomputedGradFunction(torch.autograd.Function):
    """Base of the engines: forward stores (dh, dw, db) for loss = 1; backward only scales them."""

    @staticmethod
    def needed_grads(ctx, bias, grad_enabled: bool) -> tuple[bool, bool, bool]:
        """Which of (hidden, head weight, bias) need a gradient from this forward."""
        return (grad_enabled and ctx.needs_input_grad[0],
                grad_enabled and ctx.needs_input_grad[1],
                grad_enabled and bias is not None and ctx.needs_input_grad[2])

    @staticmethod
    def save_grads(ctx, hidden, weight, bias, dh, dw, db) -> None:
        """Keep (dh, dw, db) for backward; cast to the inputs' dtypes now unless fp16 (see stored_dtype)."""
        targets = (hidden.dtype, weight.dtype, None if bias is None else bias.dtype)
        grads = []
        for g, t in zip((dh, dw, db), targets):
            if g is not None and g.dtype != stored_dtype(t):
                g = g.to(t)
            grads.append(g)
        ctx.grads = tuple(grads)
        ctx.grad_dtypes = targets

    @staticmethod
    def backward(ctx, grad_loss, _grad_nll, _grad_track):
        if ctx.grads is None:
            raise RuntimeError("linear_cross_entropy computes its gradients in the forward pass and can "
                               "be backpropagated only once (retain_graph / double backward unsupported)")
        grads = []
        for g, t in zip(ctx.grads, ctx.grad_dtypes):
            if g is not None:
                # In place: the stored gradients are used once, so scaling costs no extra memory.
                g = g.mul_(grad_loss.to(g.dtype))
                g = g if g.dtype == t else g.to(t)
            grads.append(g)
        ctx.grads = None
        return (*grads, None, None, None, None, None, None, None, None, None, None)


class ChunkedLinearCrossEntropy(PrecomputedGradFunction):
    """loss = Σ coef_i · l_i over `rows` of hidden.view(-1, d); returns (loss, per-row nll, tracked nll)."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, rows, y, coef, track_rows, track_y, eps, softcap, chunk,
                grad_enabled, mm_dtype):
        d = hidden.shape[-1]
        h2 = hidden.reshape(-1, d)
        V = weight.shape[0]
        need_dh, need_dw, need_db = PrecomputedGradFunction.needed_grads(ctx, bias, grad_enabled)
        want_grad = need_dh or need_dw or need_db
        # Mixed precision (fp32 master weights, bf16 matmuls): one low-precision copy of the head, as
        # autocast would make; the gradients still come back in the inputs' own dtypes.
        w_mm, b_mm = cast_head(weight, bias, mm_dtype)
        compute_dtype = torch.promote_types(mm_dtype, torch.float32)
        dh = torch.zeros(hidden.shape, dtype=stored_dtype(hidden.dtype), device=hidden.device) if need_dh else None
        dh2 = dh.view(-1, d) if need_dh else None
        # Low-precision matmuls accumulate the head gradient in fp32 across chunks; for an fp32 master
        # weight that accumulator is the returned gradient itself.
        dw = torch.zeros(weight.shape, dtype=compute_dtype, device=weight.device) if need_dw else None
        db = torch.zeros(V, dtype=compute_dtype, device=weight.device) if need_db else None

        n = rows.numel()
        buf = torch.empty(min(chunk, max(n, track_rows.numel(), 1)), V, dtype=compute_dtype,
                          device=hidden.device)
        loss = torch.zeros((), dtype=torch.float64, device=hidden.device)
        nll_out = torch.empty(n, dtype=compute_dtype, device=hidden.device)
        for s in range(0, n, chunk):
            r, yc, cc = rows[s:s + chunk], y[s:s + chunk], coef[s:s + chunk]
            hc = h2.index_select(0, r).to(mm_dtype)
            per_row, nll, g, sumexp, cap_grad, _ = chunk_loss(hc, w_mm, b_mm, yc, eps, softcap,
                                                            want_grad, buf)
            nll_out[s:s + chunk] = nll
            loss += (cc.double() * per_row.double()).sum()
            if not want_grad:
                continue
            # g holds exp(z - max); turn it in place into d loss / d logits.
            g.mul_((cc / sumexp)[:, None])
            g.scatter_add_(1, yc[:, None], (-(1 - eps) * cc)[:, None])
            if eps:
                g.sub_((cc * (eps / V))[:, None])
            if cap_grad is not None:
                g.mul_(cap_grad)
            del cap_grad
            if db is not None:
                db.add_(g.sum(0))
            g_lp = g if g.dtype == mm_dtype else g.to(mm_dtype)
            if dh2 is not None:
                dh2.index_copy_(0, r, torch.mm(g_lp, w_mm).to(dh2.dtype))
            if dw is not None:
                if dw.dtype == hc.dtype:
                    dw.addmm_(g_lp.t(), hc)
                else:
                    dw.add_(torch.mm(g_lp.t(), hc))
            del g, g_lp

        # Rows of weight 0 kept only for logging: forward-only, never part of the loss or gradients.
        track_out = torch.empty(track_rows.numel(), dtype=compute_dtype, device=hidden.device)
        for s in range(0, track_rows.numel(), chunk):
            hc = h2.index_select(0, track_rows[s:s + chunk]).to(mm_dtype)
            track_out[s:s + chunk] = chunk_loss(hc, w_mm, b_mm, track_y[s:s + chunk], 0.0, softcap,
                                                 False, buf)[1]
        del w_mm, b_mm

        PrecomputedGradFunction.save_grads(ctx, hidden, weight, bias, dh, dw, db)
        ctx.mark_non_differentiable(nll_out, track_out)
        return loss.to(compute_dtype), nll_out, track_out
