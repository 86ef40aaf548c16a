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
from dataclasses import dataclass, replace

import numpy as np
from scipy.optimize import minimize

#: grids for the prior's scale, its isotropic part and the noise variance (all relative to the
#: device's mean latency); the marginal likelihood picks one triple per device
LAMBDAS = (0.5, 1.0, 2.0, 4.0)
EPSILONS = (1e-4, 1e-3, 1e-2, 3e-2)
NOISES = (1e-4, 1e-3, 3e-3, 1e-2, 3e-2)
#: ridge strength of the per-source fits (hundreds of archs per source: only breaks the one-hot collinearity)
SOURCE_ALPHA = 0.1
#: |z| median of a standard normal: the leave-one-out calibration's reference
LOO_MEDIAN = 0.6745
#: bounds of every log prior scale / log noise variance in the marginal-likelihood search
LOG_BOUNDS = (np.log(1e-7), np.log(1e2))
#: fewest measured archs the level correction (``loo_level``) runs on: the median and MAD of fewer
#: leave-one-out ratios say nothing
LEVEL_MIN_N = 5
#: standard error of a sample median over that of the mean (normal data): sqrt(pi / 2)
MEDIAN_SE = 1.2533
#: MAD -> standard deviation (normal data)
MAD_SD = 1.4826
#: least scale of the source family's covariance in the predictive variance (``fit_target``): 1 = a target
#: is at least as uncertain as one more device of the sources' family wherever its N points do not look
FAMILY_FLOOR = 1.0


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


def source_family(sources: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean, covariance) of the source devices' cost vectors [S, 1 + F]: the family a new device's cost vector is
    drawn from under the transfer's prior."""
    m = sources.mean(0)
    dev = sources - m
    return m, dev.T @ dev / max(len(sources), 1)


def conditioned(cov: np.ndarray, phi: np.ndarray, noise: float) -> np.ndarray:
    """Covariance of a cost vector with prior covariance ``cov`` once the design rows ``phi`` are measured with
    noise variance ``noise`` (a Gaussian posterior's covariance needs no latencies)."""
    return cov - cov @ phi.T @ np.linalg.solve(phi @ cov @ phi.T + noise * np.eye(len(phi)), phi @ cov)


@dataclass(frozen=True)
class Kernel:
    """What ``fit_target`` chose on its N points, so the same model can be conditioned on other points
    (``condition``): the judge's question "what std would this very fit give an arch it had not seen?".

    All in the device's unit (``scale`` ms): the cost vector's prior ``N(mean, cov)``, the covariance the
    predictive variance uses (``pred_cov``: ``cov`` under the family floor), the noise variance, the
    leave-one-out variance factor and the level correction."""

    mean: np.ndarray
    cov: np.ndarray
    pred_cov: np.ndarray
    noise: float
    scale: float
    var_factor: float = 1.0
    level: float = 1.0


@dataclass
class Posterior:
    """A device's fitted cost model, in ms: ``pred = design(x) @ beta``, predictive ``var = phi' cov phi``
    (``cov[0, 0]`` includes the fit's noise variance, so the variance is that of a new measurement)."""

    beta: np.ndarray
    cov: np.ndarray
    floor_ms: float
    #: posterior probability that the source prior alone explains the target (1 without an agnostic prior)
    p_source: float = 1.0
    #: the multiplicative level correction already applied to ``beta``, ``cov`` and ``floor_ms``
    #: (``loo_level``; 1 = none)
    level: float = 1.0
    #: the fitted model behind it (``fit_target``; None for a model loaded from disk)
    kernel: Kernel | None = None
    #: the share of ``cov[0, 0]`` that is the noise of a new measurement (ms^2): what no measurement reduces,
    #: which a sampler planning measurements (``samplers``) must tell from the cost vector's uncertainty
    noise_ms2: float = 0.0

    def scaled(self, factor: float) -> Posterior:
        """The same model with every variance (the cost vector's and the noise) times ``factor``."""
        return replace(self, cov=self.cov * factor, noise_ms2=self.noise_ms2 * factor)

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(latency ms floored at ``floor_ms``, posterior std in ms) for linear features ``x``."""
        phi = design(x)
        mean = np.maximum(phi @ self.beta, self.floor_ms)
        var = np.einsum("ij,jk,ik->i", phi, self.cov, phi)
        return mean, np.sqrt(np.clip(var, 0.0, None))


def _gp(kern: Kernel, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(beta, cov, K^-1, r0) of ``kern`` conditioned on (linear features, latency in ``kern.scale`` units), before
    the variance factor and the level: the posterior mean under ``kern.cov``, the predictive covariance under
    ``kern.pred_cov`` with the noise on the intercept."""
    phi = design(x)
    r0 = y - phi @ kern.mean
    eye = np.eye(len(y))
    kinv = np.linalg.inv(phi @ kern.cov @ phi.T + kern.noise * eye)
    beta = kern.mean + kern.cov @ phi.T @ kinv @ r0
    cov = conditioned(kern.pred_cov, phi, kern.noise)
    # the noise is what the additive model does not explain on the N points (non-additive effects,
    # measurement noise): every prediction carries it, so it enters the predictive variance through the
    # intercept (whose feature is 1 for every arch)
    cov[0, 0] += kern.noise
    return beta, cov, kinv, r0


def _posterior(kern: Kernel, beta: np.ndarray, cov: np.ndarray, y_min: float, p_source: float = 1.0) -> Posterior:
    """The ms posterior of a conditioned ``kern`` (variance factor and level applied). A linear model can go
    <= 0 on archs far below every sample (e.g. pruned cells): floor it well under the fastest measurement so
    such archs still rank first."""
    unit = kern.var_factor * (kern.scale * kern.level) ** 2
    return Posterior(beta * kern.scale * kern.level, cov * unit, 0.1 * y_min * kern.scale * kern.level, p_source,
                     kern.level, kern, kern.noise * unit)


def condition(kern: Kernel, x: np.ndarray, lat_ms: np.ndarray) -> Posterior:
    """The model ``kern`` (chosen by ``fit_target`` on other points) conditioned on measured (x, ms), every
    hyper-parameter, the variance factor and the level kept as they are."""
    y = np.asarray(lat_ms, np.float64) / kern.scale
    beta, cov, _kinv, _r0 = _gp(kern, x, y)
    return _posterior(kern, beta, cov, float(y.min()))


def _grid_fit(k_src: np.ndarray, k_iso: np.ndarray, r0: np.ndarray) -> tuple[float, float, float, float]:
    """(log evidence, lam, eps, noise) of the source prior's best grid point."""
    eye = np.eye(len(r0))
    best: tuple[float, float, float, float] | None = None
    for lam, eps, noise in itertools.product(LAMBDAS, EPSILONS, NOISES):
        chol = np.linalg.cholesky(lam * k_src + eps * k_iso + noise * eye)
        a = np.linalg.solve(chol, r0)
        loglik = -0.5 * float(a @ a) - float(np.log(np.diag(chol)).sum())
        if best is None or loglik > best[0]:
            best = (loglik, lam, eps, noise)
    assert best is not None
    return best


def _evidence(log_h: np.ndarray, kernels: np.ndarray, r0: np.ndarray) -> tuple[float, np.ndarray]:
    """Negative log marginal likelihood of ``r0`` under ``sum_i exp(log_h[i]) kernels[i]`` (the last kernel is
    the noise's identity), and its gradient in ``log_h``."""
    h = np.exp(log_h)
    k = np.tensordot(h, kernels, 1)
    try:
        chol = np.linalg.cholesky(k)
    except np.linalg.LinAlgError:
        return 1e10, np.zeros_like(log_h)
    kinv = np.linalg.inv(k)
    alpha = kinv @ r0
    nll = 0.5 * float(r0 @ alpha) + float(np.log(np.diag(chol)).sum())
    grad = -0.5 * h * (np.einsum("i,kij,j->k", alpha, kernels, alpha) - np.einsum("ij,kji->k", kinv, kernels))
    return nll, grad


def shrink(m: float, se2: float) -> float:
    """Empirical-Bayes posterior mean of an effect estimated as ``m`` with sampling variance ``se2``: with a prior
    ``N(0, t^2)``, the marginal likelihood of the one estimate is maximal at ``t^2 = max(0, m^2 - se2)``, whose
    posterior mean is ``m * max(0, 1 - se2 / m^2)``. An effect within the noise of its own estimate is 0."""
    return 0.0 if m * m <= se2 else m * (1.0 - se2 / (m * m))


def loo_level(y: np.ndarray, resid: np.ndarray, floor: float) -> float:
    """Multiplicative level correction of a least-squares fit in ms, from its leave-one-out ratios.

    The cost model is fitted in ms with one noise variance for every arch, so its residuals are right-skewed
    whenever a few archs cost more than the additive model says (non-additive effects, slow outliers, integer
    ms): the fit then sits *above* the typical arch, while every relative figure (within +-10 %, MAPE) asks
    for the level of the typical arch in log space. ``y`` are the measured latencies, ``resid`` their
    leave-one-out residuals ``y - prediction without that point`` (closed form for a Gaussian process), both
    in the device's unit. The estimate is the median of the log ratios ``log(y / loo prediction)``: robust
    to a few outliers and spends no held-out data. It is shrunk by empirical Bayes (``shrink``, with the
    median's MAD-based standard error): a shift within the noise of the N points is not applied. Fewer than
    ``LEVEL_MIN_N`` points: 1.
    """
    n = len(y)
    if n < LEVEL_MIN_N:
        return 1.0
    ratio = np.log(y / np.maximum(y - resid, floor))
    m = float(np.median(ratio))
    se2 = (MEDIAN_SE * MAD_SD * float(np.median(np.abs(ratio - m)))) ** 2 / n
    return float(np.exp(shrink(m, se2)))


def fit_target(sources: np.ndarray, x: np.ndarray, lat_ms: np.ndarray,
               agnostic: dict[str, np.ndarray] | None = None, level: bool = True,
               family_floor: bool = True) -> Posterior:
    """Posterior cost model of a new device from N measured archs, under the source-device prior.

    ``sources``: [S, 1 + F] cost vectors of the source devices (``fit_source``); ``x``: [N, F] linear
    features of the measured archs. Works in the device's own units (latency / mean of the samples) and
    returns ms.

    ``agnostic`` (``predictor.opcost.prior_components``): hardware-agnostic prior covariances over the cost
    vector. With them the prior becomes ``N(m, lam S + kappa m m' + sum_c tau_c C_c + eps I)``: the sources'
    family (``S``), the sources' mean with a free scale (``kappa``; so a target unlike every source is not
    pulled to their mean), and the analytic per-op cost structure. All scales and the noise are chosen by the
    marginal likelihood of the N points, starting from the source prior's best grid point, so the source-only
    model is one point of the search and is kept unless the data prefer the extended prior.

    ``level``: scale the fitted model by ``loo_level`` (median-unbiased in log space on the N points, left
    out one at a time). A constant factor, so it changes no rank.

    ``family_floor``: the predictive covariance uses the source family's scale ``lam`` at least
    ``FAMILY_FLOOR``; the mean keeps the fitted one. Why: with 5 points the marginal likelihood can prefer a
    ``lam`` far below 1 because those points happen to lie near the sources' mean, and then the posterior is
    as sure of the cost of every op the 5 archs never varied as of those they did: intervals of 0.3 % against
    held-out errors of 6 % (docs/predictor.md, "Calibration"). The sources say how far one more device of
    their family strays from their mean in every direction (``lam = 1``), so the variance never claims less
    there; in the directions the N points pin down, the posterior contracts as before, so the floor fades as N
    grows. A prediction never moves: the same floor inside the fit would move the means where the sources fit.
    """
    y_ms = np.asarray(lat_ms, np.float64)
    scale = float(y_ms.mean())
    y = y_ms / scale
    m, s_cov = source_family(sources)
    phi = design(x)
    r0 = y - phi @ m
    eye = np.eye(len(y))
    loglik, lam, eps, noise = _grid_fit(phi @ s_cov @ phi.T, phi @ phi.T, r0)
    comps = [s_cov, np.eye(len(m))]
    h = np.array([lam, eps])
    p_source = 1.0
    if agnostic:
        comps += [np.outer(m, m), *agnostic.values()]
        kernels = np.stack([phi @ c @ phi.T for c in comps] + [eye])
        starts = [np.log([lam, eps, *[1e-6] * (len(comps) - 2), noise]),  # the source prior's optimum
                  np.log([1e-6, 1e-4, *[1.0] * (len(comps) - 2), 1e-2])]  # analytic structure only
        best_nll, best_h = -loglik, np.log([lam, eps, *[1e-6] * (len(comps) - 2), noise])
        for start in starts:
            res = minimize(_evidence, start, args=(kernels, r0), jac=True, method="L-BFGS-B",
                           bounds=[LOG_BOUNDS] * len(start))
            if res.fun < best_nll:
                best_nll, best_h = float(res.fun), res.x
        h, noise = np.exp(best_h[:-1]), float(np.exp(best_h[-1]))
        # Occam: the extended prior has len(comps) - 2 more scales, each bought at 0.5 log N (BIC); what
        # the evidence gains beyond that is the odds that the target is unlike the sources
        excess = -best_nll - loglik - 0.5 * (len(comps) - 2) * np.log(len(y))
        p_source = float(1.0 / (1.0 + np.exp(np.clip(excess, -50.0, 50.0))))
    prior = np.tensordot(h, np.stack(comps), 1)
    wide = prior + (FAMILY_FLOOR - h[0]) * s_cov if family_floor and h[0] < FAMILY_FLOOR else prior
    kern = Kernel(m, prior, wide, noise, scale)
    beta, cov, kinv, r0 = _gp(kern, x, y)
    # the hyper-parameters were fitted to these same N points, so the variance is optimistic: scale it by
    # the leave-one-out standardised residuals (closed form for a Gaussian process), robustly (median)
    alpha = kinv @ r0
    z = alpha / np.sqrt(np.diag(kinv))
    var_factor = max(1.0, float(np.median(np.abs(z)) / LOO_MEDIAN) ** 2)
    c = loo_level(y, alpha / np.diag(kinv), 0.1 * float(y.min())) if level else 1.0
    return _posterior(replace(kern, var_factor=var_factor, level=c), beta, cov, float(y.min()), p_source)
