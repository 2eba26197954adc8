"""Exit gates (paper Eq. 4): the learned 3-feature gate and the confidence-only heuristic.

Features per sample at a candidate layer L: f = (conf, margin, SAV), where conf and margin
come from the layer's exit head (max softmax probability, top-1 minus top-2 probability) and
SAV = mean_i ||z_i - mean(z)||^2 over the N patch tokens of block L (feature cache ``sav``).

**Learned gate**: score = sigmoid(w . ((f - mu) / sigma) + b). ``mu``/``sigma`` (feature
scaling, stored with the gate) are the mean and standard deviation of f on the gate's
training set. Fitted by minimising the BCE (label 1 iff the head at L is correct) with
Newton's method (IRLS) and an L2 penalty ``l2`` on w; deterministic, converges to the BCE
minimum that gradient descent (the paper's Adam, lr 1e-2) approaches.

**Heuristic gate**: score = conf (exit when the head's confidence reaches tau).

A sample exits at L iff score >= tau_L, i.e. for the learned gate iff the logit
w . ((f - mu) / sigma) + b >= logit(tau_L) (what the fixed-point comparator implements).
numpy only.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FEATURES = ("conf", "margin", "sav")


@dataclass
class LogisticGate:
    """w [3], b scalar, mu [3], sigma [3] (all float64)."""

    w: np.ndarray
    b: float
    mu: np.ndarray
    sigma: np.ndarray

    def logit(self, f: np.ndarray) -> np.ndarray:
        """Gate logit for features f [n, 3] -> [n]."""
        return ((np.asarray(f, np.float64) - self.mu) / self.sigma) @ self.w + self.b

    def score(self, f: np.ndarray) -> np.ndarray:
        """sigmoid(logit) in [0, 1], [n]."""
        return _sigmoid(self.logit(f))

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {"w": self.w.astype(np.float32), "b": np.array([self.b], np.float32),
                "mu": self.mu.astype(np.float32), "sigma": self.sigma.astype(np.float32)}

    @classmethod
    def from_arrays(cls, a: dict[str, np.ndarray]) -> "LogisticGate":
        return cls(np.asarray(a["w"], np.float64), float(np.asarray(a["b"]).reshape(-1)[0]),
                   np.asarray(a["mu"], np.float64), np.asarray(a["sigma"], np.float64))


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return np.where(z >= 0, 1.0 / (1.0 + np.exp(-np.abs(z))), np.exp(-np.abs(z)) / (1.0 + np.exp(-np.abs(z))))


def logit(tau: float) -> float:
    """log(tau / (1 - tau)), the gate-logit threshold equivalent to score >= tau (0 < tau < 1)."""
    return float(np.log(tau) - np.log1p(-tau))


def stack_features(conf: np.ndarray, margin: np.ndarray, sav: np.ndarray) -> np.ndarray:
    """(conf, margin, SAV) per sample -> [n, 3] float64; refuses NaN or infinite values."""
    f = np.stack([np.asarray(conf, np.float64), np.asarray(margin, np.float64), np.asarray(sav, np.float64)], 1)
    if not np.isfinite(f).all():
        bad = [FEATURES[j] for j in range(3) if not np.isfinite(f[:, j]).all()]
        raise ValueError(f"gate features {', '.join(bad)}: NaN or infinite values; allowed: finite numbers")
    return f


def fit_gate(f: np.ndarray, y: np.ndarray, l2: float = 1e-3, iters: int = 50) -> LogisticGate:
    """Fit the logistic gate on features f [n, 3] and labels y [n] (0/1) by IRLS.

    Degenerate labels (all 0 or all 1) give w = 0 and b = the clipped log-odds of the label mean.
    """
    f = np.asarray(f, np.float64)
    y = np.asarray(y, np.float64)
    mu = f.mean(0)
    sigma = f.std(0)
    sigma = np.where(sigma > 0, sigma, 1.0)
    X = np.concatenate([(f - mu) / sigma, np.ones((len(f), 1))], 1)
    p_mean = float(np.clip(y.mean(), 1e-4, 1 - 1e-4))
    theta = np.zeros(4)
    theta[3] = np.log(p_mean / (1 - p_mean))
    if 0 < y.mean() < 1:
        reg = np.diag([l2, l2, l2, 0.0]) * len(f)
        for _ in range(iters):
            p = _sigmoid(X @ theta)
            grad = X.T @ (p - y) + reg @ theta
            H = (X * (p * (1 - p))[:, None]).T @ X + reg + 1e-9 * np.eye(4)
            step = np.linalg.solve(H, grad)
            theta -= step
            if np.abs(step).max() < 1e-10:
                break
    return LogisticGate(theta[:3].copy(), float(theta[3]), mu, sigma)


def bce(gate: LogisticGate, f: np.ndarray, y: np.ndarray) -> float:
    """Mean binary cross-entropy of ``gate`` on (f, y)."""
    z = gate.logit(f)
    y = np.asarray(y, np.float64)
    return float(np.mean(np.logaddexp(0.0, z) - y * z))
