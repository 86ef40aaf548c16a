"""Transfer a pretrained space model to a new device from N measured archs (N as small as 5).

1. Rank the source devices by how well their predicted latencies on the N archs rank like the target's
   measurements (Spearman); the best one's embedding is the starting point -- with 5-20 points a full
   embedding cannot be learnt from scratch, but "which known device does this behave like" can.
2. Fine-tune, per ensemble member, the new embedding and the device's log-latency offset/scale on the N
   points (regression + pairwise ranking loss), with an L2 pull back to the starting embedding so few
   samples cannot drag it somewhere arbitrary.
3. Optionally fit a ridge correction of the remaining residual on the flat encoding, with its strength
   chosen by leave-one-out on the N points (so with too few or uninformative points it switches itself
   off): this captures op costs the target has and no source device had.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import spearmanr

from harness.errors import UsageError

from .encode import get_encoder
from .train import SpaceModel, pairwise_rank_loss, to_tensors


@dataclass
class TransferConfig:
    steps: int = 200
    lr: float = 0.05
    anchor: float = 0.1
    rank_weight: float = 0.5
    ridge: bool = True


def rank_sources(sm: SpaceModel, archs: list[str], log_lat: np.ndarray) -> list[tuple[str, float]]:
    """Source devices sorted by the Spearman of their predicted latency with the target's on ``archs``."""
    scores = []
    for d, name in enumerate(sm.devices):
        if sm.source[d]:
            pred = sm.log_ms(archs, name).mean(0)
            rho = spearmanr(pred, log_lat)[0] if np.ptp(log_lat) > 0 else 0.0
            scores.append((name, float(np.nan_to_num(rho))))
    return sorted(scores, key=lambda s: -s[1])


def _affine(pred: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Least-squares (mu, sigma) with y ~ mu + sigma * pred, sigma kept positive."""
    pc = pred - pred.mean()
    var = float(pc @ pc)
    sigma = float(pc @ (y - y.mean())) / var if var > 1e-12 else 0.0
    sigma = max(sigma, 1e-3)
    return float(y.mean() - sigma * pred.mean()), sigma


def _loo_ridge(x: np.ndarray, r: np.ndarray, lambdas: tuple[float, ...]) -> np.ndarray | None:
    """Ridge of residual r on features x; lambda by exact leave-one-out error; None if no lambda helps."""
    n = len(r)
    best, best_err = None, float(np.mean(r**2))  # the no-correction baseline (residual already ~0-mean)
    xc = x - x.mean(0)
    for lam in lambdas:
        h = xc @ np.linalg.solve(xc.T @ xc + lam * np.eye(x.shape[1]), xc.T)
        fit = h @ (r - r.mean()) + r.mean()
        loo = (r - fit) / np.clip(1.0 - np.diag(h) - 1.0 / n, 1e-3, None)
        err = float(np.mean(loo**2))
        if err < best_err:
            best, best_err = lam, err
    if best is None:
        return None
    coef = np.linalg.solve(xc.T @ xc + best * np.eye(x.shape[1]), xc.T @ (r - r.mean()))
    return coef


def transfer(sm: SpaceModel, device: str, archs: list[str], lat_ms: np.ndarray,
             cfg: TransferConfig | None = None, seed: int = 0) -> dict:
    """Add ``device`` to ``sm`` from measured (archs, lat_ms); returns what was chosen (for reports)."""
    cfg = cfg or TransferConfig()
    lat_ms = np.asarray(lat_ms, np.float64)
    if len(archs) < 2 or len(set(archs)) != len(archs):
        raise UsageError(f"transfer to {device!r} needs at least 2 distinct measured archs")
    if not np.all(np.isfinite(lat_ms) & (lat_ms > 0)):
        raise UsageError(f"transfer to {device!r}: latencies must be positive numbers")
    if device in sm.devices:
        raise UsageError(f"device {device!r} is already in the model")
    torch.manual_seed(seed)
    y = np.log(lat_ms)
    ranking = rank_sources(sm, archs, y)
    src = sm.device_index(ranking[0][0])
    flat, nodes, adj = to_tensors(get_encoder(sm.space).encode(archs))
    yt = torch.from_numpy(y).float()
    y_scale = float(max(y.std(), 1e-3))
    new_emb, mus, sigmas = [], [], []
    for net in sm.nets:
        k = net.k
        e0 = net.emb[:, src, :].detach().clone()
        emb = e0.clone().requires_grad_(True)
        f, n, a = (t.unsqueeze(0).expand(k, *t.shape) for t in (flat, nodes, adj))
        dev_ids = torch.zeros((k, len(archs)), dtype=torch.long)
        with torch.no_grad():
            z0 = net(f, n, a, dev_ids, e0).double().numpy()
        init = [_affine(z0[m], y) for m in range(k)]
        mu = torch.tensor([p[0] for p in init], dtype=torch.float32, requires_grad=True)
        log_sigma = torch.tensor([np.log(p[1]) for p in init], dtype=torch.float32, requires_grad=True)
        opt = torch.optim.Adam([emb, mu, log_sigma], lr=cfg.lr)
        for p in net.parameters():
            p.requires_grad_(False)
        for _ in range(cfg.steps):
            z = net(f, n, a, dev_ids, emb)
            pred = mu[:, None] + log_sigma.exp()[:, None] * z
            loss = F.mse_loss(pred / y_scale, yt.expand_as(pred) / y_scale)
            if cfg.rank_weight:
                loss = loss + cfg.rank_weight * pairwise_rank_loss(pred / y_scale, yt.expand_as(pred) / y_scale,
                                                                   dev_ids)
            loss = loss + cfg.anchor * ((emb - e0) ** 2).sum(-1).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        for p in net.parameters():
            p.requires_grad_(True)
        new_emb.append(emb.detach())
        mus.append(mu.detach().double().numpy())
        sigmas.append(log_sigma.detach().exp().double().numpy())
    sm.add_device(device, new_emb, np.concatenate(mus), np.concatenate(sigmas))
    info = {"device": device, "n": len(archs), "best_source": ranking[0][0], "source_spearman": ranking[0][1]}
    if cfg.ridge:
        enc = get_encoder(sm.space)
        resid = y - sm.log_ms(archs, device).mean(0)
        x = enc.encode(archs).flat.astype(np.float64)[:, enc.linear_features]
        coef = _loo_ridge(x, resid, (0.3, 1.0, 3.0, 10.0, 30.0))
        if coef is not None:
            sm.resid[-1, enc.linear_features] = coef
            sm.mu[:, -1] += resid.mean() - float(x.mean(0) @ coef)
        info["ridge"] = coef is not None
    return info
