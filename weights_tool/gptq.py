"""GPTQ: quantize a matrix column by column, pushing each column's rounding error onto the columns
not yet quantized so that the layer's OUTPUT on the calibration inputs moves as little as possible
(Frantar et al., 2022, "GPTQ: Accurate Post-Training Quantization for Generative Pre-trained
Transformers"). numpy only, no torch.

For W (rows, cols) and calibration inputs X (n, cols) the objective is ||X W^T - X W'^T||^2 =
tr((W - W') H (W - W')^T) with the Hessian H = X^T X (cols, cols). Fixing column j to its
quantized value q_j, the least-squares optimal change of the free columns F = {j+1, ...} is
  W[:, F] -= (w_j - q_j) / [H_F'^-1]_jj * [H_F'^-1]_{j, F}      (F' = {j} + F)
and the rows of H_F'^-1 needed are those of the upper Cholesky factor U of H^-1 (U[j, j:] / U[j, j]),
so one factorisation serves every column. Columns are taken in order, in groups of G = 32 that
are exactly the q4_0 / q4_1 / q8_0 blocks: the scale (and min) of a block is fitted when the
group starts, on the weights as the earlier groups' errors left them (blockq.fit, weighted by
diag(H)); then its 32 columns are rounded one by one. Act-order (columns by decreasing H_jj) is
not used: it would need per-column scale indices and break the block layout.

Memory: W, its codes and H / U (cols, cols): for an 8B down projection (4096, 14336) that is
0.2 GB of weights and 2 x 0.8 GB of f32 (cols, cols) matrices.
"""

from __future__ import annotations

import numpy as np

from . import blockq

DAMP = 0.01          # fraction of mean(diag H) added to the diagonal (GPTQ's percdamp)


def _inv_lower(L: np.ndarray) -> np.ndarray:
    """Inverse of a lower-triangular matrix by blocks (matmuls only, ~n^3/3 flops):
    [[A, 0], [B, C]]^-1 = [[A^-1, 0], [-C^-1 B A^-1, C^-1]]."""
    n = L.shape[0]
    if n <= 256:
        return np.linalg.inv(L)
    h = n // 2
    Ai = _inv_lower(L[:h, :h])
    Ci = _inv_lower(L[h:, h:])
    out = np.zeros_like(L)
    out[:h, :h] = Ai
    out[h:, h:] = Ci
    out[h:, :h] = -(Ci @ (L[h:, :h] @ Ai))
    return out


def inverse_cholesky(H: np.ndarray, damp: float = DAMP) -> tuple[np.ndarray, np.ndarray]:
    """(U, dead): U (cols, cols) the upper Cholesky factor of (H + damp * mean(diag) I)^-1
    (H^-1 = U^T U), and the mask of input channels that never fired (H_jj = 0).

    With J the order reversal, chol(J H J) = M gives H = R R^T for R = J M J upper, so
    H^-1 = R^-T R^-1 and U = R^-1 = J M^-1 J: one Cholesky and one triangular inverse."""
    A = np.array(H, np.float64)[::-1, ::-1]             # (cols, cols) J H J, f64: the inverse
    dead = np.diag(A)[::-1] == 0                        # of a damped Gram matrix loses digits
    idx = np.arange(A.shape[0])
    A[idx[dead[::-1]], idx[dead[::-1]]] = 1.0
    A[idx, idx] += damp * float(np.mean(np.diag(A)))
    A = np.linalg.cholesky(A)                           # M (lower)
    A = _inv_lower(A)                                   # M^-1 (lower)
    return np.ascontiguousarray(A[::-1, ::-1], dtype=np.float32), dead


def gptq_columns(W: np.ndarray, U: np.ndarray, quant_group, group_size: int = 32) -> np.ndarray:
    """The GPTQ sweep. W (rows, cols) float32 is updated IN PLACE and ends holding the quantized
    (dequantized) values. ``quant_group(g, Wg)`` is called at the start of group g with the
    group's current weights Wg (rows, G) and returns ``qcol(j, w) -> w'``: the value column j of
    the group (w: (rows,)) is rounded to. Returns the dequantized matrix (W itself)."""
    rows, cols = W.shape
    G = group_size
    for g0 in range(0, cols, G):
        g1 = min(cols, g0 + G)
        Wg = W[:, g0:g1]                                  # view (rows, G)
        Ug = U[g0:g1, g0:g1]                              # (G, G) upper
        qcol = quant_group(g0 // G, Wg.copy())
        E = np.empty((rows, g1 - g0), np.float32)         # scaled errors of the group
        for j in range(g1 - g0):
            w = Wg[:, j].copy()
            q = qcol(j, w)
            e = (w - q) / Ug[j, j]
            Wg[:, j] = q
            if j + 1 < g1 - g0:
                Wg[:, j + 1:] -= np.outer(e, Ug[j, j + 1:])
            E[:, j] = e
        if g1 < cols:
            W[:, g1:] -= E @ U[g0:g1, g1:]                # lazy batch update of the rest
    return W


def refit_scales(W: np.ndarray, q: np.ndarray, d: np.ndarray, m: np.ndarray | None,
                 H: np.ndarray, damp: float = DAMP, group_size: int = 32):
    """The block scales (and mins) that minimise the OUTPUT error for GPTQ's codes, all blocks of
    a row jointly: GPTQ fits a block's scale when the group starts, on weights that its later
    rounding errors move again; with the codes fixed the best scales are a linear least-squares
    problem per row. For row w (cols,) and Wq = sum_g d_g P_g (+ m_g 1_g) with P_g the codes
    masked to block g, minimise (w - Wq) Hd (w - Wq)^T, Hd = H + damp * mean(diag H) I (GPTQ's
    damped objective):  (B Hd B^T) x = B Hd w  with B the (K ng, cols) basis {P_g (, 1_g)}.
    The solution is rounded to f16 and kept per row only where it lowers the objective.

    W (rows, cols) the target weights; q (rows, cols) codes; d, m (rows, ng); returns (d, m)."""
    rows, cols = W.shape
    G = group_size
    ng = cols // G
    Hd = np.array(H, np.float64)                          # (cols, cols)
    Hd[np.diag_indices_from(Hd)] += damp * float(np.mean(np.diag(Hd))) + 1e-30
    Hd32 = Hd.astype(np.float32)
    K = 1 if m is None else 2
    d, m = d.copy(), (None if m is None else m.copy())
    step = max(1, (1 << 22) // (ng * ng * K * K))         # rows per chunk: A <= 32 MB f64
    for r0 in range(0, rows, step):
        r1 = min(rows, r0 + step)
        R = r1 - r0
        basis = [q[r0:r1].astype(np.float32)]             # (R, cols) each
        if K == 2:
            basis.append(np.ones((R, cols), np.float32))
        A = np.empty((R, K * ng, K * ng), np.float64)
        for a, Pa in enumerate(basis):
            for g in range(ng):
                T = Pa[:, g * G:(g + 1) * G] @ Hd32[g * G:(g + 1) * G]      # (R, cols)
                for b, Pb in enumerate(basis):
                    A[:, a * ng + g, b * ng:(b + 1) * ng] = \
                        (T * Pb).reshape(R, ng, G).sum(-1)
        w = W[r0:r1].astype(np.float32)
        HW = w @ Hd32                                                       # (R, cols)
        rhs = np.concatenate([(Pa * HW).reshape(R, ng, G).sum(-1) for Pa in basis], 1)
        A[:, np.arange(K * ng), np.arange(K * ng)] += 1e-9 * np.abs(
            A[:, np.arange(K * ng), np.arange(K * ng)]).mean(-1, keepdims=True) + 1e-30
        x = np.linalg.solve(A, rhs[..., None])[..., 0]                      # (R, K ng)
        nd = blockq._f16(x[:, :ng].astype(np.float32))
        nm = blockq._f16(x[:, ng:].astype(np.float32)) if K == 2 else None

        def err(dd, mm):
            wq = basis[0].reshape(R, ng, G) * dd[..., None]
            if mm is not None:
                wq = wq + mm[..., None]
            e = w - wq.reshape(R, cols)
            return ((e @ Hd32) * e).sum(-1)                                 # (R,)
        ok = np.isfinite(nd).all(-1) & (np.isfinite(nm).all(-1) if K == 2 else True)
        nd = np.where(ok[:, None], nd, d[r0:r1])
        nm = np.where(ok[:, None], nm, m[r0:r1]) if K == 2 else None
        better = err(nd, nm) < err(d[r0:r1], None if m is None else m[r0:r1])
        d[r0:r1] = np.where(better[:, None], nd, d[r0:r1])
        if m is not None:
            m[r0:r1] = np.where(better[:, None], nm, m[r0:r1])
    return d, m


def gptq_quantize(W: np.ndarray, H: np.ndarray, fmt: str, group_size: int = 32,
                  damp: float = DAMP, refit: int = 0):
    """GPTQ of ``W`` (rows, cols) into ``fmt`` blocks: returns (parts, dequantized (rows, cols)).

    H (cols, cols): X^T X of the layer's calibration inputs (any positive scale).
    ``refit`` > 0: after the sweep, ``refit_scales``; with refit >= 2 the sweep is run again from
    W with those scales fixed (new codes), then the scales refitted again, refit - 1 times."""
    rows, cols = W.shape
    G = group_size
    U, dead = inverse_cholesky(H, damp)
    hdiag = np.diag(H).astype(np.float32).copy()          # (cols,) importance for block fits
    ng = cols // G
    d_all = np.empty((rows, ng), np.float32)
    m_all = np.empty((rows, ng), np.float32) if fmt == "q4_1" else None
    q_all = np.empty((rows, cols), np.int16)
    lo, hi = blockq.CODE_RANGE[fmt]
    fixed = None                                           # (d, m) of a previous pass

    def quant_group(g, Wg):
        if fixed is None:
            d, m = blockq.fit(Wg[:, None, :], fmt, hdiag[None, g * G:(g + 1) * G])
            d, m = d[:, 0], (None if m is None else m[:, 0])     # (rows,)
        else:
            d, m = fixed[0][:, g], (None if fixed[1] is None else fixed[1][:, g])
        d_all[:, g] = d
        if m is not None:
            m_all[:, g] = m
        safe = np.where(d != 0, d, 1.0)

        def qcol(j, w):
            x = w - m if m is not None else w
            q = np.clip(np.rint(x / safe), lo, hi)
            q_all[:, g * G + j] = q
            return q * d + m if m is not None else q * d
        return qcol

    for p in range(max(1, refit)):
        Wc = np.array(W, np.float32)
        Wc[:, dead] = 0.0
        deq = gptq_columns(Wc, U, quant_group, G)
        if refit:
            fixed = refit_scales(W, q_all, d_all, m_all, H, damp, G)
            d_all[:], m_all = fixed[0], (None if fixed[1] is None else fixed[1].copy())
    if refit:
        deq = blockq.dequant(q_all.reshape(rows, ng, G).astype(np.float32), d_all,
                             m_all).reshape(rows, cols)
    return blockq.to_parts(q_all, d_all, m_all, fmt), deq
