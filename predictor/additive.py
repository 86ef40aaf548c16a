"""Per-op cost model with a prior learned from the source devices (the transfer's second model).

In cell- and layer-based spaces latency is close to *additive* in milliseconds: the network is a fixed
skeleton, and each position's op choice adds its own cost. On the shared NB201 data a ridge model on the
30 edge/op one-hot features alone, fitted on 2000 archs, ranks the remaining ones with Spearman 0.989-1.000
on the GPU, server-CPU, FPGA and ASIC devices (at the measurement noise floor on the integer-ms phones).
FBNet's own latency model is exactly such a per-layer lookup table. What 5-20 samples cannot do is fit 25+
free cost coefficients; what the source devices provide is the *family* those coefficients come from.

So every source device gets a cost vector ``beta_d`` (ridge fit on its training data, in units of the
device's mean latency, so a 3 ms GPU and a 30 ms phone are comparable), and a new device's cost vector is
given the Gaussian prior ``N(mean_d beta_d, lam * Cov_d beta_d + eps * I)``: "a mix of the known devices,
plus a small per-op deviation none of them has". Its posterior given the N measurements is closed-form
(a Gaussian process with that linear kernel); ``lam``, ``eps`` and the noise variance are chosen by the
marginal likelihood of the N points, so no held-out data is spent on them. The posterior covariance gives
every prediction a variance, i.e. an uncertainty in the same units.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

#: grids for the prior's scale, its isotropic part and the noise variance (all relative to the
#: device's mean latency); the marginal likelihood picks one triple per device
LAMBDAS = (0.5, 1.0, 2.0, 4.0)
EPSILONS = (1e-4, 1e-3, 1e-2, 3e-2)
NOISES = (1e-4, 1e-3, 3e-3, 1e-2, 3e-2)
#: ridge strength of the per-source fits (hundreds of archs per source: only breaks the one-hot collinearity)
SOURCE_ALPHA = 0.1


def design(x: np.ndarray) -> np.ndarray:
    """Intercept column + the space's linear (op one-hot) features."""
    return np.concatenate([np.ones((len(x), 1)), np.asarray(x, np.float64)], axis=1)


def fit_source(x: np.ndarray, lat_ms: np.ndarray, alpha: float = SOURCE_ALPHA) -> np.ndarray:
    """Ridge cost vector [1 + F] of one source device, in units of its mean latency (intercept unpenalised)."""
    y = np.asarray(lat_ms, np.float64) / float(np.mean(lat_ms))
    x = np.asarray(x, np.float64)
    xm = x.mean(0)
    xc = x - xm
    coef = np.linalg.solve(xc.T @ xc + alpha * np.eye(x.shape[1]), xc.T @ (y - y.mean()))
    return np.concatenate([[y.mean() - xm @ coef], coef])


@dataclass
class Posterior:
    """A device's fitted cost model, in ms: ``pred = design(x) @ beta``, ``var = phi' cov phi``."""

    beta: np.ndarray
    cov: np.ndarray
    floor_ms: float

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(latency ms floored at ``floor_ms``, posterior std in ms) for linear features ``x``."""
        phi = design(x)
        mean = np.maximum(phi @ self.beta, self.floor_ms)
        var = np.einsum("ij,jk,ik->i", phi, self.cov, phi)
        return mean, np.sqrt(np.clip(var, 0.0, None))


def fit_target(sources: np.ndarray, x: np.ndarray, lat_ms: np.ndarray) -> Posterior:
    """Posterior cost model of a new device from N measured archs, under the source-device prior.

    ``sources``: [S, 1 + F] cost vectors of the source devices (``fit_source``); ``x``: [N, F] linear
    features of the measured archs. Works in the device's own units (latency / mean of the samples) and
    returns ms.
    """
    y_ms = np.asarray(lat_ms, np.float64)
    scale = float(y_ms.mean())
    y = y_ms / scale
    m = sources.mean(0)
    dev = sources - m
    s_cov = dev.T @ dev / max(len(sources), 1)
    phi = design(x)
    r0 = y - phi @ m
    k_src = phi @ s_cov @ phi.T
    k_iso = phi @ phi.T
    eye = np.eye(len(y))
    best: tuple[float, float, float, float] | None = None
    for lam, eps, noise in itertools.product(LAMBDAS, EPSILONS, NOISES):
        chol = np.linalg.cholesky(lam * k_src + eps * k_iso + noise * eye)
        a = np.linalg.solve(chol, r0)
        loglik = -0.5 * float(a @ a) - float(np.log(np.diag(chol)).sum())
        if best is None or loglik > best[0]:
            best = (loglik, lam, eps, noise)
    assert best is not None
    _, lam, eps, noise = best
    prior = lam * s_cov + eps * np.eye(len(m))
    k = phi @ prior @ phi.T + noise * eye
    gain = prior @ phi.T @ np.linalg.inv(k)  # [1 + F, N]
    beta = m + gain @ r0
    cov = prior - gain @ phi @ prior
    # a linear model can go <= 0 on archs far below every sample (e.g. pruned cells): floor it well under
    # the fastest measurement so such archs still rank first
    return Posterior(beta * scale, cov * scale**2, 0.1 * float(y_ms.min()))
