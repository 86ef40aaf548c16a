"""Multi-device pretraining of one search space's model, and the model object itself.

Targets are log latencies standardised per device: latencies from 0.003 ms (a pruned cell on a phone) to
1000+ ms (a big net on a microcontroller) then all live on the same unit scale, and a device that is
uniformly 10x slower is the same learning problem as a fast one. The loss is a Huber regression on that
scale (robust to the handful of near-zero outliers) plus a pairwise logistic ranking loss between archs
of the same device, because NAS consumes the ranking.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from agents.errors import UsageError

from .additive import Posterior, fit_source
from .encode import Encoded, get_encoder
from .models import LatencyNet, build_net


@dataclass
class TrainConfig:
    """Pretraining hyper-parameters; stored in saved models so a model can be rebuilt and audited."""

    nets: list[tuple[str, int, int]] = field(default_factory=lambda: [("gnn", 2, 48), ("mlp", 3, 128)])
    steps: int = 1200
    batch: int = 256
    lr: float = 3e-3
    weight_decay: float = 1e-4
    rank_weight: float = 0.5
    seed: int = 0

    def __post_init__(self) -> None:
        """Refuse values training cannot use, from the CLI or from a model file, before anything is allocated.

        ``steps`` >= 20: the one-cycle schedule needs a warm-up step (at 10 steps torch divides by zero).
        The net sizes bound what a tampered model file can make ``load`` build (``k * hidden^2`` floats).
        """
        checks = [
            ("steps", self.steps, int, 20, 10**7),
            ("batch", self.batch, int, 1, 1 << 20),
            ("lr", self.lr, float, 1e-12, 10.0),
            ("weight_decay", self.weight_decay, float, 0.0, 10.0),
            ("rank_weight", self.rank_weight, float, 0.0, 100.0),
            ("seed", self.seed, int, 0, 2**63 - 1),
        ]
        for name, value, kind, lo, hi in checks:
            ok_type = isinstance(value, int | float) if kind is float else isinstance(value, int)
            if isinstance(value, bool) or not ok_type or not lo <= value <= hi:  # NaN fails the range
                raise UsageError(f"training {name} must be a {kind.__name__} from {lo:g} to {hi:g}, got {value!r}")
        if not isinstance(self.nets, list | tuple) or not 1 <= len(self.nets) <= 8:
            raise UsageError(f"training nets must be 1 to 8 (kind, members, hidden) triples, got {self.nets!r}")
        for net in self.nets:
            ok = isinstance(net, list | tuple) and len(net) == 3 and net[0] in ("gnn", "mlp") and \
                all(isinstance(v, int) and not isinstance(v, bool) for v in net[1:]) and \
                1 <= net[1] <= 64 and 1 <= net[2] <= 1024
            if not ok:
                raise UsageError(f"training net {net!r} must be (gnn|mlp, 1..64 members, 1..1024 hidden)")


def to_tensors(enc: Encoded) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return torch.from_numpy(enc.flat), torch.from_numpy(enc.nodes), torch.from_numpy(enc.adj)


def pairwise_rank_loss(pred: torch.Tensor, target: torch.Tensor, group: torch.Tensor) -> torch.Tensor:
    """Logistic loss on every ordered pair of the same group (device) with distinct targets.

    pred/target/group: [K, B]. Pairs whose targets differ by < 1e-6 (integer-ms ties) carry no order.
    """
    dp = pred.unsqueeze(-1) - pred.unsqueeze(-2)
    dt = target.unsqueeze(-1) - target.unsqueeze(-2)
    mask = (group.unsqueeze(-1) == group.unsqueeze(-2)) & (dt > 1e-6)
    if not bool(mask.any()):
        return pred.sum() * 0.0
    return F.softplus(-dp[mask]).mean()


class SpaceModel:
    """One space's ensemble: nets, device table, per-member log-latency scaling and per-op cost models.

    A device's prediction is ``w_d * [mu[m, d] + sigma[m, d] * net_m(arch, emb[m, d])] + (1 - w_d) * log
    cost_d(arch)``: pretrained devices use the networks alone (``w_d = 1``); a transferred device blends them
    with its per-op cost model (``predictor.additive``), whose prior comes from the sources' cost vectors.
    """

    def __init__(self, space: str, devices: list[str], nets: list[LatencyNet], cfg: TrainConfig,
                 mu: np.ndarray, sigma: np.ndarray, n_linear: int) -> None:
        self.space = space
        self.devices = list(devices)
        self.nets = nets
        self.cfg = cfg
        n_members = sum(n.k for n in nets)
        self.mu = np.broadcast_to(np.asarray(mu, np.float64), (n_members, len(devices))).copy()
        self.sigma = np.broadcast_to(np.asarray(sigma, np.float64), (n_members, len(devices))).copy()
        self.source = [True] * len(devices)
        #: per-op cost vectors in ms (intercept first), their ms scale (a source's mean training latency)
        self.cost = np.zeros((len(devices), 1 + n_linear))
        self.cost_scale = np.ones(len(devices))
        #: weight of the networks in a device's log-space blend (1 = networks only)
        self.nn_weight = np.ones(len(devices))
        #: transferred devices' cost-model posteriors (covariance in ms^2, floor in ms)
        self.cost_cov: dict[str, np.ndarray] = {}
        self.cost_floor: dict[str, float] = {}
        #: the noise part of ``cost_cov[device][0, 0]`` (``Posterior.noise_ms2``; absent in files before it)
        self.cost_noise: dict[str, float] = {}

    def add_device(self, device: str, emb: list[torch.Tensor], mu: np.ndarray, sigma: np.ndarray,
                   cost: Posterior, scale: float, nn_weight: float) -> None:
        """Append a transferred device: one embedding per net ([K, E]), per-member mu/sigma, its cost model
        (``scale``: the ms unit it was fitted in) and the networks' weight in its blend."""
        for net, e in zip(self.nets, emb, strict=True):
            net.emb = torch.nn.Parameter(torch.cat([net.emb.detach(), e.unsqueeze(1)], dim=1))
        self.devices.append(device)
        self.source.append(False)
        self.mu = np.concatenate([self.mu, mu[:, None]], axis=1)
        self.sigma = np.concatenate([self.sigma, sigma[:, None]], axis=1)
        self.cost = np.concatenate([self.cost, cost.beta[None, :]], axis=0)
        self.cost_scale = np.append(self.cost_scale, scale)
        self.nn_weight = np.append(self.nn_weight, nn_weight)
        self.cost_cov[device] = cost.cov
        self.cost_floor[device] = cost.floor_ms
        self.cost_noise[device] = cost.noise_ms2

    def source_costs(self) -> np.ndarray:
        """The source devices' cost vectors in units of their mean latency: the transfer prior's samples."""
        src = np.asarray(self.source)
        return self.cost[src] / self.cost_scale[src, None]

    @property
    def n_members(self) -> int:
        return self.mu.shape[0]

    def device_index(self, device: str) -> int:
        return self.devices.index(device)

    @torch.no_grad()
    def raw(self, enc: Encoded, dev: int, chunk: int = 4096) -> np.ndarray:
        """Standardised net outputs [members, B] of encoded archs on device id ``dev``."""
        flat, nodes, adj = to_tensors(enc)
        outs = []
        for s in range(0, len(flat), chunk):
            parts = []
            for net in self.nets:
                k = net.k
                f, n, a = (t[s:s + chunk].unsqueeze(0).expand(k, *t[s:s + chunk].shape)
                           for t in (flat, nodes, adj))
                parts.append(net(f, n, a, torch.full((k, f.shape[1]), dev, dtype=torch.long)))
            outs.append(torch.cat(parts, 0))
        return torch.cat(outs, 1).double().numpy()

    def _cost(self, enc: Encoded, device: str) -> tuple[np.ndarray, np.ndarray]:
        """(ms, posterior std in ms) of a transferred device's cost model on encoded archs."""
        d = self.device_index(device)
        post = Posterior(self.cost[d], self.cost_cov[device], self.cost_floor[device])
        return post.predict(get_encoder(self.space).linear(enc.flat))

    def predict(self, archs: list[str], device: str) -> tuple[np.ndarray, np.ndarray]:
        """(mean log latency, its std): the ensemble spread for a pretrained device, the cost model's
        calibrated predictive std for a transferred one."""
        d = self.device_index(device)
        enc = get_encoder(self.space).encode(archs)  # once: the networks and the cost model share it
        lg = self.mu[:, d:d + 1] + self.sigma[:, d:d + 1] * self.raw(enc, d)
        w = float(self.nn_weight[d])
        mean, var = lg.mean(0), lg.var(0)
        if not self.source[d]:
            # the cost model's predictive std (noise and leave-one-out calibrated) is the blend's: on the
            # development splits it covers ~68 % of held-out archs at +-1 std, the ensemble spread far less
            cost, sd = self._cost(enc, device)
            mean = w * mean + (1.0 - w) * np.log(cost)
            var = (sd / cost) ** 2
        return mean, np.sqrt(var)


def pretrain(space: str, archs: list[str], devices: list[str], lat_ms: np.ndarray, dev_of_row: np.ndarray,
             cfg: TrainConfig, progress: object | None = None) -> SpaceModel:
    """Train a ``SpaceModel`` on rows (archs[i], devices[dev_of_row[i]], lat_ms[i]).

    ``progress`` is an optional callable(step, total) so the CLI can show a bar.
    """
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    lat_ms = np.asarray(lat_ms, np.float64)
    uniq, arch_idx = np.unique(np.asarray(archs), return_inverse=True)
    enc = get_encoder(space).encode(list(uniq))
    flat, nodes, adj = to_tensors(enc)
    logl = np.log(lat_ms)
    n_dev = len(devices)
    mu = np.zeros(n_dev)
    sigma = np.ones(n_dev)
    for d in range(n_dev):
        sel = logl[dev_of_row == d]
        mu[d] = sel.mean()
        sigma[d] = max(float(sel.std()), 1e-3)
    y = torch.from_numpy((logl - mu[dev_of_row]) / sigma[dev_of_row]).float()
    a_idx = torch.from_numpy(arch_idx.astype(np.int64))
    d_idx = torch.from_numpy(dev_of_row.astype(np.int64))
    nets = [build_net(kind, k, n_dev, flat.shape[1], nodes.shape[2], hidden) for kind, k, hidden in cfg.nets]
    params = [p for net in nets for p in net.parameters()]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.steps, pct_start=0.1)
    n_rows = len(y)
    batch = min(cfg.batch, n_rows)
    for step in range(cfg.steps):
        loss = torch.zeros(())
        for net in nets:
            rows = torch.from_numpy(rng.integers(0, n_rows, size=(net.k, batch)))
            ai = a_idx[rows]
            pred = net(flat[ai], nodes[ai], adj[ai], d_idx[rows])
            target = y[rows]
            loss = loss + F.smooth_l1_loss(pred, target) * net.k
            if cfg.rank_weight:
                loss = loss + cfg.rank_weight * pairwise_rank_loss(pred, target, d_idx[rows]) * net.k
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if progress is not None:
            progress(step + 1, cfg.steps)
    for net in nets:
        net.eval()
    lin = get_encoder(space).linear(enc.flat)
    sm = SpaceModel(space, devices, nets, cfg, mu[None, :], sigma[None, :], lin.shape[1])
    for d in range(n_dev):
        rows = dev_of_row == d
        sm.cost_scale[d] = float(np.mean(lat_ms[rows]))
        sm.cost[d] = fit_source(lin[arch_idx[rows]], lat_ms[rows]) * sm.cost_scale[d]
    return sm
