"""The hardware-agnostic cost prior (issue 10): analytic per-op quantities, and a transfer to a device unlike
every source that the source prior alone cannot fit."""

from __future__ import annotations

import numpy as np
from designs import nb201_onehot_prior, nb201_onehot_quantities, nb201_onehots
from scipy.stats import spearmanr

from predictor.additive import fit_source, fit_target
from predictor.bench import score
from predictor.encode import analytic_flops, get_encoder
from predictor.opcost import graph_quantities, op_quantities, prior_components


def test_op_quantities_follow_the_layer_plan() -> None:
    """FBNet's per-op FLOPs/bytes/launches come from the space's shapes: its grouped blocks launch the channel
    shuffle. NB201's cost features are its traced networks' (FLOPs per op type): a 3x3 conv in place of a 1x1
    adds what the analytic count says."""
    enc = get_encoder("nb201")
    q, names, _ = graph_quantities()
    conv_flops = q[:, 0] * np.isin(names, ("conv", "conv_pw"))  # 3x3 and pointwise convolutions
    base = "|skip_connect~0|+|skip_connect~0|skip_connect~1|+|skip_connect~0|skip_connect~1|skip_connect~2|"
    one = "|nor_conv_1x1~0|+|skip_connect~0|skip_connect~1|+|skip_connect~0|skip_connect~1|skip_connect~2|"
    three = "|nor_conv_3x3~0|+|skip_connect~0|skip_connect~1|+|skip_connect~0|skip_connect~1|skip_connect~2|"
    traced = enc.linear(enc.encode([base, one, three]).flat) @ conv_flops * 1e8  # LINEAR_UNITS: 1e8 FLOPs
    analytic = analytic_flops("nb201", [base, one, three])
    assert np.allclose(np.diff(traced), np.diff(analytic), rtol=1e-6), (traced, analytic)
    qf, names_f = op_quantities("fbnet")
    assert qf.shape == (22 * 9, 3)
    assert qf[names_f.index("k3_e1_g2"), 2] == qf[names_f.index("k3_e1"), 2] + 3
    comps = prior_components("fbnet")
    assert all(c.shape == (199, 199) and np.allclose(c, c.T) for c in comps.values())
    assert prior_components("no-such-space") == {}


def test_agnostic_prior_fits_a_device_unlike_every_source() -> None:
    """Sources whose costs do not follow FLOPs (every op alike, 'phones'); the target is a roofline device
    (FLOPs / peak + bytes / bandwidth + launches x overhead). From 12 samples the agnostic prior ranks it far
    better than the source prior alone, and the evidence says the sources do not explain it."""
    rng = np.random.default_rng(1)
    archs, x = nb201_onehots()
    q = nb201_onehot_quantities(archs, x)
    sources = []
    for _ in range(6):
        cost = rng.uniform(0.8, 1.2, x.shape[1]) * np.where(np.arange(x.shape[1]) % 5 == 1, 0.0, 1.0)
        pick = rng.choice(len(archs), 300, replace=False)
        sources.append(fit_source(x[pick], 5.0 + x[pick] @ cost))
    theta = np.array([1.0 / 2e8, 1.0 / 4e6, 0.02]) * [1e8, 1e7, 10.0]  # compute-bound, in graph.LINEAR_UNITS
    truth = (2.0 + x @ (q @ theta)) * np.exp(rng.normal(0, 0.01, len(x)))
    pick = rng.choice(len(archs), 12, replace=False)
    rest = np.setdiff1d(np.arange(len(archs)), pick)
    src_only = fit_target(np.stack(sources), x[pick], truth[pick])
    mixed = fit_target(np.stack(sources), x[pick], truth[pick], nb201_onehot_prior(archs, x))
    rho_src = spearmanr(src_only.predict(x[rest])[0], truth[rest])[0]
    pred, sd = mixed.predict(x[rest])
    rho_mixed = spearmanr(pred, truth[rest])[0]
    assert rho_mixed > 0.97 and rho_mixed > rho_src + 0.05, (rho_mixed, rho_src)
    assert mixed.p_source < 0.5 and src_only.p_source == 1.0
    # the std is of the right size: the median standardised error within a factor 2.5 of a normal's (0.674), so
    # neither collapsed nor blown up. (Not nominal: from 12 samples the evidence-fitted std runs narrow, the
    # small-N fault docs/predictor.md reports; here the median is ~1.3, i.e. 0.40 inside +-1 std, and whether
    # that share lands just above or below 0.40 depended on the machine's floating-point kernels.)
    z = np.median(np.abs(pred - truth[rest]) / sd)
    assert 0.674 / 2.5 < z < 0.674 * 2.5, z


def test_agnostic_prior_costs_nothing_where_the_sources_fit() -> None:
    """A target that is a mix of the sources: the extended prior ranks it as well as the source prior alone
    (the source-only optimum is a starting point of the evidence search, so it can only be left for a better
    fit)."""
    rng = np.random.default_rng(2)
    archs, x = nb201_onehots()
    basis = rng.uniform(0.0, 1.0, size=(3, x.shape[1]))
    sources = []
    for _ in range(8):
        w = rng.dirichlet(np.ones(3))
        pick = rng.choice(len(archs), 400, replace=False)
        sources.append(fit_source(x[pick], 2.0 + x[pick] @ (w @ basis)))
    truth = (2.0 + x @ (np.array([0.6, 0.1, 0.3]) @ basis)) * np.exp(rng.normal(0, 0.01, len(x)))
    pick = rng.choice(len(archs), 12, replace=False)
    rest = np.setdiff1d(np.arange(len(archs)), pick)
    src_only = fit_target(np.stack(sources), x[pick], truth[pick])
    mixed = fit_target(np.stack(sources), x[pick], truth[pick], nb201_onehot_prior(archs, x))
    rho_src = spearmanr(src_only.predict(x[rest])[0], truth[rest])[0]
    rho_mixed = spearmanr(mixed.predict(x[rest])[0], truth[rest])[0]
    assert rho_mixed > rho_src - 0.01, (rho_mixed, rho_src)


def test_score_keeps_degenerate_archs_apart() -> None:
    """A wild error on a degenerate arch moves only the *_degenerate figures; coverage counts the +-1 std hits."""
    true = np.array([10.0, 10.0, 10.0, 10.0, 0.01])
    pred = np.array([10.5, 9.0, 12.0, 10.0, 5.0])
    log_std = np.full(5, 0.1)
    m = score(pred, true, log_std, np.array([False, False, False, False, True]))
    assert m["within_10pct"] == 0.75 and m["coverage_1sigma"] == 0.5  # |log 10/9| = 0.105 > 0.1
    assert m["mape"] == (5 + 10 + 20 + 0) / 4
    assert m["within_10pct_degenerate"] == 0.0 and m["mape_degenerate"] > 1000
    none = score(pred[:4], true[:4], log_std[:4], np.zeros(4, bool))
    assert none["mape_degenerate"] is None and none["coverage_1sigma_degenerate"] is None
