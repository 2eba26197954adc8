"""What the exit unit's SSA and SAV stages read of the int8 exit-tap tokens: two integer sums.

For the N patch tokens q_1..q_N (int8 [d] each; token 0, [CLS], excluded) of one image:

- ``s1`` int64 [n, d]: S1 = sum_i q_i
- ``s2`` int64 [n]:    S2 = sum_i ||q_i||^2

SSA is ``S1 / N`` times the tap scale and SAV is ``(N S2 - ||S1||^2) / N^2`` times its square
(:func:`exitlogic.fixedpoint.stages.ssa_mean`, :func:`~exitlogic.fixedpoint.stages.sav_exact`), so a
feature store keeps these sums (:mod:`analysis.features`, ``tap_sum`` / ``tap_sumsq``) instead of
all [n, N+1, d] tokens. :class:`TapSums` goes wherever the unit takes tokens, with the same results,
bit for bit.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class TapSums:
    """S1 [n, d] and S2 [n] (int64) of N patch tokens per image; ``shape`` is the token tensor's [n, N+1, d]."""

    s1: np.ndarray
    s2: np.ndarray
    n_tokens: int

    @classmethod
    def of_tokens(cls, q: np.ndarray) -> "TapSums":
        qp = np.asarray(q)[:, 1:, :].astype(np.int32)
        return cls(qp.sum(axis=1, dtype=np.int64), np.einsum("nij,nij->n", qp, qp, dtype=np.int64), qp.shape[1])

    @property
    def shape(self) -> tuple[int, int, int]:
        return (int(self.s1.shape[0]), int(self.n_tokens) + 1, int(self.s1.shape[1]))

    def __len__(self) -> int:
        return int(self.s1.shape[0])

    def __getitem__(self, rows) -> "TapSums":
        return TapSums(self.s1[rows], self.s2[rows], self.n_tokens)


def sums_of(q) -> TapSums:
    """``q`` as :class:`TapSums` (tokens [n, N+1, d] are summed; sums pass through)."""
    return q if isinstance(q, TapSums) else TapSums.of_tokens(q)
