"""Exact per-example gradients of the word-embedding matrix, kept sparse.

The gradient of an example's loss with respect to the word-embedding matrix E [V x H] is non-zero
only in the rows of the tokens the example contains: row u is the sum of the gradients with respect
to the input embedding at every position holding token u. For XLM-R (V = 250,002, H = 768) a dense
per-example gradient would be 192M numbers; the sparse form is at most T rows.

``SparseRows`` holds these rows for a set of examples (one row per distinct (example, token)), and
``sparse_dots`` computes every inner product between two such sets exactly by matching token ids:
``<grad_E(a), grad_E(b)> = sum over tokens u in both of row_a(u) . row_b(u)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class SparseRows:
    """Rows of per-example word-embedding gradients.

    ``owner[i]`` is the example (0..n-1) that row i belongs to, ``token[i]`` its vocabulary id and
    ``rows[i]`` the gradient row [H]; each (owner, token) pair appears once.
    """

    owner: torch.Tensor  # [P] int64
    token: torch.Tensor  # [P] int64
    rows: torch.Tensor  # [P, H]
    n: int  # number of examples

    @classmethod
    def from_positions(cls, grads: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor, vocab_size: int | None = None) -> SparseRows:
        """Collapse position gradients ``grads`` [B, T, H] of tokens ``ids`` [B, T] (positions where
        ``mask`` is 0 are ignored) into one row per distinct (example, token)."""
        b, t, h = grads.shape
        keep = mask.reshape(-1).bool()
        owner = torch.arange(b, device=ids.device).repeat_interleave(t)[keep]
        token = ids.reshape(-1)[keep]
        flat = grads.reshape(-1, h)[keep]
        if vocab_size is None:
            vocab_size = int(token.max().item()) + 1 if token.numel() else 1
        key = owner * vocab_size + token
        uniq, inverse = torch.unique(key, return_inverse=True)
        rows = torch.zeros((uniq.numel(), h), dtype=grads.dtype, device=grads.device)
        rows.index_add_(0, inverse, flat)
        first = torch.zeros(uniq.numel(), dtype=torch.long, device=ids.device)
        first.scatter_(0, inverse, torch.arange(inverse.numel(), device=ids.device))
        return cls(owner=owner[first], token=token[first], rows=rows, n=b)

    def sq_norms(self) -> torch.Tensor:
        """Squared norm of each example's sparse gradient [n] (float64)."""
        out = torch.zeros(self.n, dtype=torch.float64, device=self.rows.device)
        out.index_add_(0, self.owner, torch.linalg.vector_norm(self.rows, dim=1).double().pow(2))
        return out

    def sorted_by_token(self) -> SparseRows:
        order = torch.argsort(self.token, stable=True)
        return SparseRows(self.owner[order], self.token[order], self.rows[order], self.n)


def sparse_dots(a: SparseRows, b_sorted: SparseRows, max_elements: int = 1 << 24) -> torch.Tensor:
    """All inner products [a.n x b.n] between the examples of ``a`` and of ``b_sorted`` (whose rows
    must be sorted by token, see ``SparseRows.sorted_by_token``), accumulated in the rows' dtype.

    Works on matching (token) pairs only: the cost is the number of pairs of rows that share a token,
    times H, done in blocks of at most ``max_elements`` gathered numbers.
    """
    out = torch.zeros((a.n, b_sorted.n), dtype=a.rows.dtype, device=a.rows.device)
    if a.token.numel() == 0 or b_sorted.token.numel() == 0:
        return out
    lo = torch.searchsorted(b_sorted.token, a.token, right=False)
    hi = torch.searchsorted(b_sorted.token, a.token, right=True)
    counts = hi - lo
    has = counts > 0
    if not bool(has.any()):
        return out
    a_idx = torch.nonzero(has).squeeze(1)
    counts = counts[a_idx]
    lo = lo[a_idx]
    h = a.rows.shape[1]
    # split the a-rows into blocks whose number of pairs x H stays under max_elements
    cum = torch.cumsum(counts, 0)
    total = int(cum[-1].item())
    per_block = max(1, max_elements // max(h, 1))
    start_pair = 0
    start_row = 0
    n_rows = a_idx.numel()
    while start_row < n_rows:
        # last row whose cumulative pair count fits in this block (at least one row)
        limit = start_pair + per_block
        end_row = int(torch.searchsorted(cum, torch.tensor(limit, device=cum.device), right=True).item())
        end_row = max(end_row, start_row + 1)
        c = counts[start_row:end_row]
        rows_a = a_idx[start_row:end_row].repeat_interleave(c)
        # b index of each pair: lo of its a-row + position within that row's run
        base = lo[start_row:end_row].repeat_interleave(c)
        offs = torch.arange(int(c.sum().item()), device=c.device) - (torch.cumsum(c, 0) - c).repeat_interleave(c)
        rows_b = base + offs
        vals = (a.rows[rows_a] * b_sorted.rows[rows_b]).sum(1)
        out.index_put_((a.owner[rows_a], b_sorted.owner[rows_b]), vals, accumulate=True)
        start_pair = int(cum[end_row - 1].item())
        start_row = end_row
    assert start_pair == total
    return out
