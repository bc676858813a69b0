"""Linear predictability of neighbouring features: the seed's hypothesis, measured on any
frozen encoder (and on the raw input).

QB-Heat assumes that a feature vector d steps away is a fixed linear map of the one here,
z(x + d, y) = (I + A)^d z(x, y). Whatever an encoder was trained with, this asks how true
that is of its features: on the probes' training inputs, ridge least squares fits maps
M_x(d): z(x, y) -> z(x + d, y) and M_y(d): z(x, y) -> z(x, y + d) for d = 1..4 (text: token
j -> j + d; sentence level: sentence vector j -> j + d within a document), with an
intercept; the penalty is chosen among `PENALTIES` (times the mean variance of the input
features) by R^2 on the last `VALIDATION_SHARE` of the training inputs after fitting on the
rest, then the map is refitted on all of them. Reported: the R^2 of each map on the TEST
inputs (1 - SSE / the targets' total variance about their test mean, over all feature
dimensions), beside two baselines on the same pairs: identity, z(x + d) = z(x), and the
position mean (the target position's mean feature over the training inputs: what position
alone predicts; a single global mean would score about 0 by construction). Metrics are the
mean over the grid's axes (x and y; text has one).

Two more on the same pairs, for what the R^2 says about the hypothesis:
- the content baseline (`content_r2`): ridge from [the target position's one-hot, the input's
  mean token (over its real positions)] to z(x + d), penalty chosen and scored as the maps
  are. It holds no neighbour information at all: what position and the input's overall
  content alone predict. The map's gain over it is what the neighbour adds.
- composition (`composed_r2`): the fitted d = 1 affine map z -> z M + b applied d times,
  z M^d + b (I + M + ... + M^(d-1)), scored as the predictor at distance d. One linear map
  whose powers give every distance is what the seed claims; fitted maps that predict well
  at each d but do not compose are a different (weaker) property.

For a fill that is itself a linear step map on the encoder's features
(`MaskingMethod.neighbour_maps`: QB-Heat at the encoder, one step per token, no
normalisation), also how close its d-th power is to the fitted map: the R^2 of (I + A)^d
used as the predictor (no intercept), and ||M_fitted - (I + A)^d||_F / ||M_fitted||_F.
Note the encoder here sees whole inputs, while in pretraining it saw the visible block only;
at the sentence level the fill steps the context encoder's slot vectors, not the sentence
vectors measured here, so there is no comparison.

Images and text blocks: at most `GRID_INPUTS` per split (each gives many pairs per axis and
distance: 500 images of an 8x8 grid give 28,000 pairs for a 128 x 128 map).
Every sum is accumulated over batches in float64 (no feature map is held in memory), so the
cost is one forward pass over those inputs plus D x D products per pair (the content
baseline adds D x D products per input, not per pair: its sums are assembled by blocks).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
from torch import Tensor

from bench.core.errors import ConfigError
from bench.eval.positions import PositionFeatures, batches, frozen, read_all

DISTANCES = (1, 2, 3, 4)
GRID_INPUTS = 500  # images or text blocks per split: each gives hundreds of pairs
PENALTIES = tuple(10.0**e for e in range(-6, 2))  # x the mean variance of the input features
VALIDATION_SHARE = 0.2


def _zeros(device: torch.device):
    """A maker of float64 zeros on `device`: what every sum starts from."""
    return lambda *shape: torch.zeros(*shape, dtype=torch.float64, device=device)


class _Sums:
    """Sums over pairs, added field by field (the fit part + the validation part)."""

    def __add__(self, other):
        return type(self)(*(getattr(self, f.name) + getattr(other, f.name)
                            for f in dataclasses.fields(self)))


@dataclass
class Moments(_Sums):
    """Sums over pairs (x -> y) of one axis and distance: what ridge fits and R^2 need.
    `pos_sy [H, W, D]`, `pos_n [H, W]`: sum and count of the targets by target position."""

    n: int
    sx: Tensor
    sy: Tensor
    sxx: Tensor
    sxy: Tensor
    syy: Tensor
    pos_sy: Tensor
    pos_n: Tensor

    @classmethod
    def zeros(cls, dim: int, grid: tuple[int, int], device: torch.device) -> Moments:
        z = _zeros(device)
        return cls(0, z(dim), z(dim), z(dim, dim), z(dim, dim), z(()), z(*grid, dim), z(*grid))

    def add(self, x: Tensor, y: Tensor) -> None:
        """Pairs `x, y [M, D]`: one batch's products in float32 (as fast as the forward
        pass; features in float64 keep float64), summed across batches in float64."""
        if x.dtype != torch.float64:
            x, y = x.float(), y.float()
        self.n += len(x)
        self.sx += x.sum(0, dtype=torch.float64)
        self.sy += y.sum(0, dtype=torch.float64)
        self.sxx += x.T @ x
        self.sxy += x.T @ y
        self.syy += y.square().sum(dtype=torch.float64)

    def ridge(self, penalty: float) -> tuple[Tensor, Tensor]:
        """Map `M [D, D]` and intercept `b [D]` minimising the mean of ||x M + b - y||^2 plus
        penalty x tr(Cov x) / D x ||M||_F^2 (y predicted as x @ M + b)."""
        mx, my = self.sx / self.n, self.sy / self.n
        cxx = self.sxx / self.n - torch.outer(mx, mx)
        cxy = self.sxy / self.n - torch.outer(mx, my)
        scale = cxx.diagonal().mean()
        if scale <= 0:  # constant inputs: nothing to map
            return torch.zeros_like(cxy), my
        eye = torch.eye(len(cxx), dtype=cxx.dtype, device=cxx.device)
        m = torch.linalg.solve(cxx + penalty * scale * eye, cxy)
        return m, my - mx @ m

    def sse(self, m: Tensor, b: Tensor | None = None) -> float:
        """Sum over pairs of ||x M + b - y||^2."""
        out = self.syy - 2 * (m * self.sxy).sum() + (m * (self.sxx @ m)).sum()
        if b is not None:
            out += -2 * b @ self.sy + 2 * b @ (self.sx @ m) + self.n * b @ b
        return out.item()

    def sst(self) -> float:
        """Sum over pairs of ||y - mean y||^2 (the targets' total variance x n)."""
        return (self.syy - self.sy @ self.sy / self.n).item()

    def r2(self, m: Tensor, b: Tensor | None = None) -> float:
        sst = self.sst()
        return 1.0 - self.sse(m, b) / sst if sst > 0 else math.nan

    def position_means(self) -> Tensor:
        """`[H, W, D]` mean target at each position (the overall mean where none was seen)."""
        seen = (self.pos_n > 0).unsqueeze(-1)
        means = self.pos_sy / self.pos_n.clamp_min(1).unsqueeze(-1)
        return torch.where(seen, means, self.sy / self.n)

    def position_mean_r2(self, means: Tensor) -> float:
        """R^2 of predicting each target by `means` at its position."""
        sst = self.sst()
        sse = (self.syy - 2 * (means * self.pos_sy).sum()
               + (self.pos_n * means.square().sum(-1)).sum())
        return 1.0 - sse.item() / sst if sst > 0 else math.nan


@dataclass
class ContentSums(_Sums):
    """The content baseline's sums beyond a pair set's `Moments`, whose regressors are the
    target position's one-hot and the input's mean token m: `sm` = sum over pairs of m [D],
    `smm` of m m^T [D, D], `smy` of m y^T [D, D], `spm [H, W, D]` of m by target position.
    Each is a sum over inputs (m is one vector per input), never a product per pair."""

    sm: Tensor
    smm: Tensor
    smy: Tensor
    spm: Tensor

    @classmethod
    def zeros(cls, dim: int, grid: tuple[int, int], device: torch.device) -> ContentSums:
        z = _zeros(device)
        return cls(z(dim), z(dim, dim), z(dim, dim), z(*grid, dim))

    def add(self, mean: Tensor, keep: Tensor, targets: Tensor, at: tuple) -> None:
        """Inputs' mean tokens `mean [B, D]` (float64), where their pairs are `keep [B, h, w]`
        (at target positions `at` of the grid) and those pairs' targets `[B, h, w, D]`."""
        target_sums = torch.einsum("bhw,bhwd->bd", keep.to(targets.dtype), targets).double()
        keep = keep.double()
        counts = keep.sum((1, 2))
        self.sm += counts @ mean
        self.smm += (mean * counts.unsqueeze(1)).T @ mean
        self.smy += mean.T @ target_sums
        self.spm[at] += torch.einsum("bhw,bd->hwd", keep, mean)

    def moments(self, pairs: Moments) -> Moments:
        """The `Moments` of regressors [one-hot of the target position, m] -> target on
        `pairs` (the same pairs' sums), assembled by blocks."""
        positions = self.spm.shape[0] * self.spm.shape[1]
        pos_n = pairs.pos_n.flatten()
        spm = self.spm.reshape(positions, -1)
        sxx = torch.cat([torch.cat([torch.diag(pos_n), spm], 1),
                         torch.cat([spm.T, self.smm], 1)])
        sxy = torch.cat([pairs.pos_sy.reshape(positions, -1), self.smy])
        return Moments(pairs.n, torch.cat([pos_n, self.sm]), pairs.sy, sxx, sxy, pairs.syy,
                       pairs.pos_sy, pairs.pos_n)


class PairSums:
    """The moments of every (axis, distance) pair set (and the content baseline's sums),
    filled from batches of feature maps `[B, H, W, D]` (text: H = 1) with an optional validity
    mask `[B, H, W]`: a pair counts where both ends are valid, an input's mean token is over
    its valid positions. Axis x pairs (r, c) -> (r, c + d), axis y (r, c) -> (r + d, c)."""

    def __init__(self, axes: tuple[str, ...], grid: tuple[int, int], dim: int,
                 device: torch.device):
        self.grid = tuple(grid)
        size = {"x": grid[1], "y": grid[0]}
        keys = [(a, d) for a in axes for d in DISTANCES if d < size[a]]
        self.moments = {k: Moments.zeros(dim, self.grid, device) for k in keys}
        self.content = {k: ContentSums.zeros(dim, self.grid, device) for k in keys}

    def content_moments(self, key: tuple[str, int]) -> Moments:
        """The content baseline's moments of pair set `key`."""
        return self.content[key].moments(self.moments[key])

    def add(self, maps: Tensor, valid: Tensor | None = None) -> None:
        dim = maps.shape[-1]
        real = (torch.ones(maps.shape[:3], dtype=torch.bool, device=maps.device)
                if valid is None else valid)
        mean = (torch.einsum("bhw,bhwd->bd", real.to(maps.dtype), maps).double()
                / real.sum((1, 2)).clamp_min(1).unsqueeze(-1))
        for (axis, d), m in self.moments.items():
            src = (slice(None), slice(None), slice(None, -d)) if axis == "x" else (
                slice(None), slice(None, -d))
            dst = (slice(None), slice(None), slice(d, None)) if axis == "x" else (
                slice(None), slice(d, None))
            targets = maps[dst]
            keep = real[src] & real[dst]
            self.content[(axis, d)].add(mean, keep, targets, dst[1:])
            if valid is None:  # every position real (images): no masking to pay for
                m.add(maps[src].reshape(-1, dim), targets.reshape(-1, dim))
                m.pos_sy[dst[1:]] += targets.sum(0, dtype=torch.float64)
                m.pos_n[dst[1:]] += len(maps)
                continue
            m.add(maps[src][keep], targets[keep])
            m.pos_sy[dst[1:]] += (targets * keep.unsqueeze(-1)).sum(0, dtype=torch.float64)
            m.pos_n[dst[1:]] += keep.sum(0)


@dataclass
class PairFit:
    """One (axis, distance): the chosen penalty, the map and intercept fitted on all training
    pairs, and the test R^2 of it, of the two baselines and of the content baseline."""

    penalty: float
    map: Tensor
    intercept: Tensor
    r2: float
    identity_r2: float
    mean_r2: float
    content_r2: float


def ridge_by_validation(fit: Moments, val: Moments) -> tuple[float, Tensor, Tensor]:
    """Penalty by validation R^2 (ties: the larger); map and intercept refitted on fit + val."""
    scores = {p: val.r2(*fit.ridge(p)) for p in PENALTIES}
    penalty = max(sorted(scores, reverse=True), key=lambda p: _finite(scores[p]))
    return (penalty, *(fit + val).ridge(penalty))


def fit_pairs(fit: Moments, val: Moments, test: Moments,
              content: tuple[Moments, Moments, Moments]) -> PairFit:
    """The map (penalty chosen on val, refitted on fit + val) scored on test, beside the
    baselines on the same test pairs; `content`: the content baseline's (fit, val, test)."""
    penalty, m, b = ridge_by_validation(fit, val)
    _, cm, cb = ridge_by_validation(*content[:2])
    eye = torch.eye(len(m), dtype=m.dtype, device=m.device)
    return PairFit(penalty, m, b, test.r2(m, b), test.r2(eye),
                   test.position_mean_r2((fit + val).position_means()), content[2].r2(cm, cb))


def _finite(x: float) -> float:
    return x if math.isfinite(x) else -math.inf


def fit_all(fit: PairSums, val: PairSums, test: PairSums) -> dict[tuple[str, int], PairFit]:
    return {k: fit_pairs(fit.moments[k], val.moments[k], test.moments[k],
                         (fit.content_moments(k), val.content_moments(k),
                          test.content_moments(k)))
            for k in fit.moments}


def composed(step: PairFit, d: int) -> tuple[Tensor, Tensor]:
    """The affine one-step map z -> z M + b applied `d` times: (M^d, b (I + M + ... + M^(d-1)))."""
    power = torch.linalg.matrix_power(step.map, d)
    shift = step.intercept @ sum(torch.linalg.matrix_power(step.map, k) for k in range(d))
    return power, shift


def summarise(fits: dict[tuple[str, int], PairFit], test: PairSums,
              steps: dict[str, Tensor] | None = None) -> dict[str, float]:
    """summary.json metrics: per distance the mean over axes of each R^2, the content
    baseline's and the composed one-step map's (and, given the method's one-step maps
    `steps`, of their powers' R^2 and distance to the fitted map)."""
    out: dict[str, list[float]] = {}
    for (axis, d), f in fits.items():
        values = {"r2": f.r2, "identity_r2": f.identity_r2, "mean_r2": f.mean_r2,
                  "content_r2": f.content_r2,
                  "composed_r2": test.moments[(axis, d)].r2(*composed(fits[(axis, 1)], d))}
        if steps is not None and axis in steps:
            power = torch.linalg.matrix_power(steps[axis].to(f.map), d)
            values["heat_r2"] = test.moments[(axis, d)].r2(power)
            values["heat_gap"] = ((f.map - power).norm() / f.map.norm()).item()
        for name, v in values.items():
            out.setdefault(f"linpred_{name}_d{d}", []).append(v)
    return {k: sum(v) / len(v) for k, v in out.items() if all(math.isfinite(x) for x in v)}


def linpred_metrics(cfg, data, encoder, device: torch.device,
                    steps: dict[str, Tensor] | None = None) -> dict[str, float]:
    """Linear predictability of `encoder`'s features (None: the raw input's, see
    bench.eval.positions) on the run's probe splits: the first `eval_train_limit` training
    inputs for the fits, the first `eval_test_limit` test inputs for the scores, both at most
    `GRID_INPUTS` images (or, for text, packed blocks: the inputs pretraining reads), and at
    the sentence level those sentences' documents in document order; `steps`: the fill's
    one-step maps, compared with the fitted ones."""
    if data.modality == "image":
        train = data.eval_split("train", _grid_limit(cfg.eval_train_limit)).x
        test = data.eval_split("test", _grid_limit(cfg.eval_test_limit)).x
        parts = _grid_parts(PositionFeatures.of(encoder, data), train, test, "image",
                            cfg.eval_batch_size, device)
    elif hasattr(data, "document_split"):  # sentence level: documents of sentence vectors
        train = data.document_split(cfg.eval_train_limit, "train")
        test = data.document_split(cfg.eval_test_limit)
        parts = _document_parts(PositionFeatures.of(encoder, data, train.x), train, test,
                                cfg.eval_batch_size, device)
        steps = None  # the fill steps the context encoder's slots, not these vectors
    else:  # token level: the packed blocks pretraining reads
        train = data.train_blocks[: _grid_limit(cfg.eval_train_limit)]
        test = data.heldout_blocks(_grid_limit(cfg.eval_test_limit))
        parts = _grid_parts(PositionFeatures.of(encoder, data, train), train, test, "token",
                            cfg.eval_batch_size, device)
    fit, val, test_sums = parts
    return summarise(fit_all(fit, val, test_sums), test_sums, steps)


def _grid_limit(limit: int | None) -> int:
    return GRID_INPUTS if limit is None else min(limit, GRID_INPUTS)


def _split_at(n: int) -> int:
    """How many of `n` training inputs (or documents) the maps are fitted on before the
    penalty is chosen on the rest."""
    if n < 2:
        raise ConfigError(f"linear predictability needs at least two training inputs (or "
                          f"documents), got {n}: raise eval_train_limit")
    return min(n - 1, max(1, math.ceil(n * (1 - VALIDATION_SHARE))))


@torch.no_grad()
def _grid_parts(reader: PositionFeatures, train: Tensor, test: Tensor, kind: str,
                batch_size: int, device: torch.device) -> tuple[PairSums, PairSums, PairSums]:
    """Sums over the fit part, the validation part of `train` and over `test`, streamed."""
    n_fit = _split_at(len(train))
    out = []
    with frozen(reader):
        for part, desc in ((train[:n_fit], "fit"), (train[n_fit:], "validation"),
                           (test, "test")):
            sums = None
            for _, xb, _ in batches(part, None, batch_size, device, f"linpred {desc}"):
                maps, valid = _maps(reader, kind, xb)
                if sums is None:
                    sums = PairSums(("x", "y") if kind == "image" else ("x",), maps.shape[1:3],
                                    maps.shape[-1], device)
                sums.add(maps, valid)
            out.append(sums)
    return out[0], out[1], out[2]


def _maps(reader: PositionFeatures, kind: str, x: Tensor) -> tuple[Tensor, Tensor | None]:
    """`[B, H, W, D]` feature maps of a batch and where they are real (text: not padding;
    the encoder reads a block without a padding mask, as in pretraining)."""
    tokens = reader.tokens(x)
    if kind == "image":
        gh, gw = reader.data.spec.grid
        return tokens.view(len(x), gh, gw, -1), None
    return tokens.unsqueeze(1), (x != reader.data.pad_id).unsqueeze(1)


def _document_parts(reader: PositionFeatures, train, test, batch_size: int,
                    device: torch.device) -> tuple[PairSums, PairSums, PairSums]:
    """Sentence vectors (pooled, as the probes read them), one document per row of a 1-D grid
    as wide as the longest document: the first documents of `train` to fit, the rest to
    choose the penalty, `test` to score."""
    vectors = [read_all(reader, s.x, s.pad_mask, batch_size, device, f"linpred {name}",
                        pooled=True) for s, name in ((train, "train"), (test, "test"))]
    docs = [s.y.to(device) for s in (train, test)]
    places = [torch.arange(len(d), device=device) - torch.searchsorted(d, d) for d in docs]
    width = max(int(p.max()) + 1 for p in places)
    n_fit = _split_at(int(docs[0].max()) + 1)
    train_part = docs[0] < n_fit
    out = []
    for v, d, p, keep in ((vectors[0], docs[0], places[0], train_part),
                          (vectors[0], docs[0], places[0], ~train_part),
                          (vectors[1], docs[1], places[1], None)):
        if keep is not None:
            v, d, p = v[keep], d[keep], p[keep]
            d = d - d.min()
        maps = v.new_zeros(int(d.max()) + 1, 1, width, v.shape[-1])
        valid = torch.zeros(maps.shape[:3], dtype=torch.bool, device=device)
        maps[d, 0, p] = v
        valid[d, 0, p] = True
        sums = PairSums(("x",), (1, width), v.shape[-1], device)
        sums.add(maps, valid)
        out.append(sums)
    return out[0], out[1], out[2]
