"""Samplers: which architectures should we measure next on this device?

* ``random``      -- uniform over the unmeasured candidates.
* ``diversity``   -- k-means over the flat encodings (standardised), then the unmeasured arch nearest to
  each centroid: the picks cover the space the way the space is populated, so the transfer fit sees
  every region once instead of five archs from the densest one. Archs already measured on the device are
  fixed centroids of that k-means, and only the ``n`` new ones move: each later batch goes to the regions the
  earlier ones left uncovered. (Clustering the pool alone put every batch's centroids in the same places, so
  batch after batch measured near-copies of the first: in the simulated profile loop, FPGA and Eyeriss
  targets stopped improving after 8-10 measurements, docs/active_loop.md.)
* ``weighted``    -- ``diversity`` with each unmeasured arch counted in the k-means by how uncertain the device's
  model is about it: ``sd / (sd + median sd)`` of its predicted std of log latency (the transferred model's
  calibrated std), so the new centroids go where the space is both populated and uncertain. Saturating, because
  that std is heavy-tailed (pixel3 from 10 archs: median 0.34, 1 % of the regular archs above 4.7, where the
  cost model predicts near-zero ms) and raw std weights put the whole batch there. The measured archs stay fixed
  centroids. For a device the model has not seen yet it is plain ``diversity``.
* ``variance``    -- the batch that most reduces the cost model's predicted variance of relative latency, summed
  over the pool's regular archs (a greedy V-optimal design: each pick updates the covariance before the next). Once
  the device's own fit rests on ``additive.LEVEL_MIN_N`` points or more it plans with that fitted posterior, whose
  std is the calibrated one the predictions carry (the noise, which no measurement reduces, kept apart), and also
  for what the per-op costs leave unexplained (half the device's fitted noise, scaled with latency, as a remainder
  smooth over the encodings), so later batches also pin down the typical arch's level: in the profile loop within
  +-10 % after 40 measurements 0.78 -> 0.82 (docs/active_loop.md). Before that (a device the model has not seen,
  or one fitted on fewer points) it plans with the transfer's prior from the source devices, conditioned on what
  was measured. Never a degenerate arch. One-shot on the development tasks it beats ``diversity`` at 5-10 picks
  and ties it at 20 (docs/predictor.md).
* ``adaptive``    -- ``diversity`` while the model has not seen the device (the first batch: one-shot transfer is
  unchanged), ``variance`` once it is transferred: the first batch covers the space, the later ones are planned
  on what the device's measurements left uncertain.
* ``uncertainty`` -- the archs the model is least sure about on that device: ensemble spread for a
  device the model knows; for a device it has never seen, how much the source devices disagree about the
  arch (after per-device standardisation) plus the ensemble spread -- the archs that best tell devices apart.
* ``hybrid``      -- diversity among the archs the model is least sure about: the ``HYBRID_SHORTLIST * n``
  most uncertain unmeasured archs on the device (ensemble spread of the transferred model), then k-means
  picks spread over that shortlist, so one batch does not spend five measurements on five near-copies of
  the same uncertain cell. For a device the model has not seen yet it is plain ``diversity``.
* ``default``     -- ``adaptive``, chosen by measurement (docs/active_loop.md, docs/predictor.md). For a one-shot
  pick on a new device (the transfer benchmark) ``diversity`` beat random on the development tasks NX1-NX3 and
  two leave-hardware-out splits (20 samples, 2 seeds: 0.932 vs 0.920 mean Spearman) and, at 20 picks on ND,
  ``variance`` (0.9736 vs 0.9711), so the first batch is diversity's. In the simulated profile loop (11 targets,
  family-out and other hardware, batch 2, 2 seeds) ``variance`` after that first batch is level with or ahead of
  ``diversity`` from 6 measurements on (Spearman / within +-10 % after 10: 0.963 / 0.82 against 0.943 / 0.73;
  after 40: 0.969 / 0.84 against 0.966 / 0.82), ahead of ``variance`` alone from 6 on, and behind after 4 on
  Spearman (0.912 against 0.929). ``weighted`` tied ``diversity`` and ``hybrid`` was worse on pixel2. On one
  real end-to-end profile (PyTorch eager, 1 thread, one seed) ``diversity``'s predictions had the better shape
  (0.96 against 0.89 within +-10 % with the level divided out) and ``adaptive``'s the right level: one run, not
  yet a reason either way (docs/predictor.md, "End to end on a real device").

Every sampler excludes the archs already measured on the device.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
from scipy.linalg import block_diag
from sklearn.cluster import KMeans
from sklearn.kernel_approximation import RBFSampler

from agents.errors import UsageError

from .additive import FAMILY_FLOOR, LEVEL_MIN_N, conditioned, design, source_family
from .encode import SpaceEncoder, get_encoder
from .train import SpaceModel

SAMPLERS = ("random", "diversity", "weighted", "uncertainty", "hybrid", "variance", "adaptive")
DEFAULT_SAMPLER = "adaptive"
#: the hybrid sampler clusters the HYBRID_SHORTLIST * n archs the device's model is least sure about
HYBRID_SHORTLIST = 10


def _pool(candidates: Iterable[str], measured: Iterable[str]) -> list[str]:
    seen = set(measured)
    pool = list(dict.fromkeys(a for a in candidates if a not in seen))
    return pool


def _sq_dist(x: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances [points, centres], without a [points, centres, features] temporary."""
    return np.maximum((x * x).sum(1)[:, None] - 2.0 * x @ centres.T + (centres * centres).sum(1)[None, :], 0.0)


def _centres_around(x: np.ndarray, fixed: np.ndarray, n: int, rng: np.random.Generator,
                    weight: np.ndarray | None = None, max_iter: int = 50) -> np.ndarray:
    """``n`` k-means centroids of ``x`` (each point counted ``weight`` times; default once) beside the ``fixed``
    ones, which stay where they are: k-means++ seeding that counts the fixed centroids as already chosen, then
    Lloyd steps that move only the free centroids. A free centroid that loses every point is re-seeded at the
    point with the most weighted distance to all centroids."""
    w = np.ones(len(x)) if weight is None else weight
    near_fixed = _sq_dist(x, fixed).min(1) if len(fixed) else np.full(len(x), np.inf)  # fixed: computed once
    d2 = near_fixed.copy() if len(fixed) else np.ones(len(x))
    free = np.empty((n, x.shape[1]))
    for c in range(n):
        mass = w * d2
        total = mass.sum()
        i = int(rng.choice(len(x), p=mass / total)) if total > 0 else int(rng.integers(len(x)))
        free[c] = x[i]
        d2 = np.minimum(d2, _sq_dist(x, free[c:c + 1])[:, 0])
    for _ in range(max_iter):
        dist = _sq_dist(x, free)
        nearest = dist.min(1)
        label = np.where(nearest < near_fixed, dist.argmin(1), -1)  # -1: a fixed centroid is nearer (or as near)
        moved = free.copy()
        for c in range(n):
            members = label == c
            moved[c] = np.average(x[members], axis=0, weights=w[members]) if members.any() and w[members].sum() > 0 \
                else x[int((w * np.minimum(nearest, near_fixed)).argmax())]
        if np.allclose(moved, free):
            break
        free = moved
    return free


def _measured_flat(encoder: SpaceEncoder, measured: Sequence[str], width: int) -> np.ndarray:
    """The measured archs' flat encodings in float64; [0, width] when none are."""
    return encoder.encode(list(measured)).flat.astype(np.float64) if measured else np.empty((0, width))


def _standardised(pool_x: np.ndarray, done_x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pool and measured encodings standardised by the pool's mean and std, so every encoding column counts
    alike in a distance."""
    mean, scale = pool_x.mean(0), np.maximum(pool_x.std(0), 1e-6)
    return (pool_x - mean) / scale, (done_x - mean) / scale


def _diversity(space: str, pool: list[str], n: int, rng: np.random.Generator,
               measured: Sequence[str] = (), weight: np.ndarray | None = None) -> list[str]:
    encoder = get_encoder(space)
    x = encoder.encode(pool).flat.astype(np.float64)
    x, fixed = _standardised(x, _measured_flat(encoder, measured, x.shape[1]))
    if measured or weight is not None:
        centres = _centres_around(x, fixed, n, rng, weight)
    else:
        centres = KMeans(n_clusters=n, n_init=1, max_iter=50,
                         random_state=int(rng.integers(2**31 - 1))).fit(x).cluster_centers_
    chosen: list[int] = []
    taken = np.zeros(len(pool), bool)
    for c in range(n):
        d = ((x - centres[c]) ** 2).sum(-1)
        d[taken] = np.inf
        i = int(np.argmin(d))
        taken[i] = True
        chosen.append(i)
    return [pool[i] for i in chosen]


#: the design prior of ``variance`` for a device the model has not fitted: the isotropic per-op deviation and the
#: noise variance, in units of the device's mean latency squared (middle points of ``additive.EPSILONS`` and
#: ``additive.NOISES``); the sources' family enters at ``additive.FAMILY_FLOOR``
DESIGN_EPS = 1e-3
DESIGN_NOISE = 1e-3
#: ``variance``: the share of a fitted device's noise that is a remainder smooth over the encodings (the rest stays
#: white); an even split, not fitted
RESIDUAL_SHARE = 0.5
#: ``variance``: random Fourier features that stand for that remainder's RBF kernel
RESIDUAL_FEATURES = 256


def _fitted(model: SpaceModel, device: str | None, measured: int) -> bool:
    """Whether ``variance`` plans with the device's own fit: the model has one and it rests on
    ``additive.LEVEL_MIN_N`` measured archs or more. Below that its evidence-chosen hyper-parameters and noise are
    not trusted, as for the level correction: after two diversity picks the device's own posterior planned a
    second batch worse than the sources' prior did (profile loop, within +-10 % after 4 measurements 0.58 against
    0.68, docs/active_loop.md)."""
    return device in model.cost_noise and measured >= LEVEL_MIN_N


def _design_model(model: SpaceModel, device: str | None, measured: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray, float]:
    """(mean cost vector, its covariance, noise variance) that ``variance`` plans with, given the design rows of the
    archs ``measured`` on the device. A device with its own fit (``_fitted``): that fitted cost model
    (hyper-parameters chosen by its evidence, already conditioned on its measurements), without the noise, which
    no measurement reduces. Otherwise the transfer's prior from the source devices, conditioned on ``measured``
    (a Gaussian posterior's covariance needs no latencies)."""
    if _fitted(model, device, len(measured)):
        noise = model.cost_noise[device]
        cov = model.cost_cov[device].copy()
        cov[0, 0] = max(cov[0, 0] - noise, 0.0)
        return model.cost[model.device_index(device)], cov, noise
    mean, family = source_family(model.source_costs())
    cov = FAMILY_FLOOR * family + DESIGN_EPS * np.eye(len(mean))
    return mean, conditioned(cov, measured, DESIGN_NOISE) if len(measured) else cov, DESIGN_NOISE


def _residual_features(pool_x: np.ndarray, done_x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Random Fourier features (sklearn's ``RBFSampler``) of the pool's and the measured archs' flat encodings,
    standardised over the pool, for an RBF kernel whose length is the median distance between pool archs
    (a fixed-seed subsample of 1000): archs that close share most of their non-additive remainder."""
    x, xd = _standardised(pool_x, done_x)
    sub = x[np.random.default_rng(0).choice(len(x), size=min(len(x), 1000), replace=False)]
    d2 = _sq_dist(sub, sub)[np.triu_indices(len(sub), 1)]
    ell2 = float(np.median(d2)) if d2.size and np.median(d2) > 0 else 1.0
    rff = RBFSampler(gamma=0.5 / ell2, n_components=RESIDUAL_FEATURES, random_state=0).fit(x[:1])
    return rff.transform(x), rff.transform(xd)


def _variance(model: SpaceModel, device: str | None, pool: list[str], n: int, measured: Sequence[str]
              ) -> list[str]:
    """Greedy batch that most reduces the predicted variance of relative latency summed over the pool's regular
    archs (V-optimal design), each pick updating the covariance before the next, so a batch does not measure one
    direction twice. Degenerate archs are neither picked nor counted: the runtime prunes them, so their latency
    says nothing about the per-op costs.

    What is uncertain: the cost model's per-op costs (``_design_model``) and, once the device's own fit rests on
    ``additive.LEVEL_MIN_N`` points or more, the remainder that fit leaves unexplained (its noise): then
    ``RESIDUAL_SHARE`` of that noise (at the median arch; it scales with the arch's latency) is a smooth function
    of the encoding (RBF over the standardised encodings, as random Fourier features beside the op features),
    which measuring an arch also reduces for its neighbours, and the rest stays white. Without it the design
    keeps pinning the per-op costs with atypical archs, and the typical arch's remainder and level are learnt
    last: in the profile loop within +-10 % fell from 0.80 after 10 measurements to 0.78 after 40
    (docs/active_loop.md). Below ``LEVEL_MIN_N`` points the device's noise is not trusted, as for the level
    correction, and the design is the cost model's alone.
    """
    encoder = get_encoder(model.space)
    regular = ~encoder.degenerate(pool)
    if regular.sum() >= n:
        pool = [a for a, ok in zip(pool, regular, strict=True) if ok]
        regular = np.ones(len(pool), bool)
    pool_x = encoder.encode(pool).flat.astype(np.float64)
    done_x = _measured_flat(encoder, measured, pool_x.shape[1])
    phi, done = design(encoder.linear(pool_x)), design(encoder.linear(done_x))
    mean, cov, noise = _design_model(model, device, done)
    predicted = phi @ mean
    median = max(float(np.median(predicted[regular])), 1e-12)
    floor = 0.1 * median  # a linear model can go <= 0 far below every sample
    level = np.maximum(predicted, floor)
    if _fitted(model, device, len(measured)):
        z, z_done = _residual_features(pool_x, done_x)
        # the remainder scales with the arch's latency (its variance is the noise's share at the median arch)
        z *= (level / median)[:, None]
        z_done *= (np.maximum(done @ mean, floor) / median)[:, None]
        smooth = RESIDUAL_SHARE * noise
        noise -= smooth
        # the per-op posterior is already conditioned on the measured archs; the remainder is, here
        z_cov = conditioned(smooth * np.eye(z.shape[1]), z_done, noise)
        phi = np.hstack([phi, z])
        cov = block_diag(cov, z_cov)
    target = phi[regular] / level[regular, None]  # error relative to the predicted latency
    # measuring candidate j (features phi_j) takes phi_j' S G S phi_j / (noise + phi_j' S phi_j) off the summed
    # variance, G = target' target; with u = phi S and w = u G kept up to date by rank-1 steps, a pick costs
    # O(pool x features) instead of a features^2 product per candidate
    u = phi @ cov
    g = target.T @ target
    w = u @ g
    chosen: list[int] = []
    for _ in range(n):
        gain = (w * u).sum(1) / (noise + (u * phi).sum(1))
        gain[chosen] = -np.inf
        i = int(np.argmax(gain))
        chosen.append(i)
        v = u[i].copy()  # S phi_i
        pv = phi @ v / (noise + v @ phi[i])
        u -= np.outer(pv, v)
        w -= np.outer(pv, g @ v)
    return [pool[i] for i in chosen]


def _uncertainty(model: SpaceModel, device: str | None, pool: list[str]) -> np.ndarray:
    if device is not None and device in model.devices:
        return model.predict(pool, device)[1]
    enc = get_encoder(model.space).encode(pool)
    per_dev = [model.raw(enc, d) for d in range(len(model.devices)) if model.source[d]]
    z = np.stack(per_dev)  # [devices, members, archs], already standardised per device
    return z.mean(1).std(0) + z.std(1).mean(0)


def sample(sampler: str, space: str, candidates: Iterable[str], n: int, seed: int = 0,
           measured: Iterable[str] = (), model: SpaceModel | None = None, device: str | None = None) -> list[str]:
    """Pick ``n`` archs to measure next from ``candidates``, never one in ``measured``."""
    if sampler == "default":
        sampler = DEFAULT_SAMPLER
    unseen = model is None or device not in model.devices  # nothing is known about this device yet
    if sampler == "adaptive":
        sampler = "diversity" if unseen else "variance"
    if sampler not in SAMPLERS:
        raise UsageError(f"unknown sampler {sampler!r}; choose from {', '.join((*SAMPLERS, 'default'))}")
    measured = list(dict.fromkeys(measured))
    pool = _pool(candidates, measured)
    if n > len(pool):
        raise UsageError(f"asked for {n} archs but only {len(pool)} unmeasured candidates remain")
    if n <= 0:
        return []
    rng = np.random.default_rng(seed)
    if sampler == "random":
        return [pool[i] for i in rng.choice(len(pool), size=n, replace=False)]
    if sampler == "diversity" or (sampler == "weighted" and unseen):
        return _diversity(space, pool, n, rng, measured)
    if model is None:
        raise UsageError("the uncertainty sampler needs a trained model")
    if sampler == "variance":
        return _variance(model, device, pool, n, measured)
    if sampler == "weighted":
        sd = model.predict(pool, device)[1]
        return _diversity(space, pool, n, rng, measured, weight=sd / (sd + max(float(np.median(sd)), 1e-12)))
    if sampler == "hybrid" and unseen:
        return _diversity(space, pool, n, rng)
    score = _uncertainty(model, device, pool) + 1e-9 * rng.random(len(pool))
    order = np.argsort(-score)
    if sampler == "uncertainty":
        return [pool[i] for i in order[:n]]
    top = [pool[i] for i in order[:min(len(pool), max(HYBRID_SHORTLIST * n, n))]]
    return _diversity(space, top, n, rng)
