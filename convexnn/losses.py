"""Losses L(ŷ, y) with their gradient, Fenchel conjugate and the divergences the solvers need.

Every loss here is a sum over rows divided by a normaliser N that is fixed by the data (n·c for the
squared and logistic losses, n for cross-entropy), so values computed on row blocks add up: that is what
lets the solvers split X by rows. Predictions z and targets y are (n, c) inside the solvers.

Besides value and gradient each loss gives
- `conjugate(θ)`: L*(θ) = sup_z ⟨θ, z⟩ − L(z), for dual objectives;
- `fenchel_young_gap(z, θ)`: L(z) + L*(θ) − ⟨θ, z⟩ ≥ 0, written without cancellation (a squared norm or a KL
  divergence), which is what the duality gap is made of;
- `bregman(z1, z0)`: L(z1) − L(z0) − ⟨∇L(z0), z1 − z0⟩ ≥ 0, for the line search, also cancellation-free;
- `hvp(z, dz)`: ∇²L(z) dz, for Newton steps;
- `prox(w, t)`: argmin_z L(z) + ‖z − w‖²/(2t), row by row, for ADMM's split of the predictions (squared
  and logistic; cross-entropy has none yet, so ADMM refuses it).

The methods that sum over rows (value, conjugate, Fenchel–Young gap, Bregman) take an optional `rows`
(`convexnn._rows.Rows`): with it they skip padding rows and add the sums of every shard of row-sharded data.
"""

from __future__ import annotations

import abc
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import xlogy
from jax.typing import ArrayLike
from jaxtyping import Array, Float, Scalar

from ._rows import Rows, row_all, row_sum

__all__ = ["Loss", "Squared", "Logistic", "CrossEntropy", "get_loss", "softmax_bregman", "expm1_minus_x"]


def expm1_minus_x(x: Array) -> Array:
    """e^x − 1 − x, accurate to a few ulps relative also where it is tiny (|x| ≪ 1: ≈ x²/2)."""
    small = jnp.abs(x) < 0.125
    t = jnp.where(small, x, jnp.zeros((), x.dtype))
    series = jnp.ones((), x.dtype)
    for k in range(12, 2, -1):  # x²/2 · (1 + x/3 (1 + x/4 (… (1 + x/12)))): the tail is below float64's eps
        series = 1 + t / k * series
    return jnp.where(small, 0.5 * t * t * series, jnp.expm1(x) - x)


def softmax_bregman(delta: Float[Array, "... k"], logits0: Float[Array, "... k"]) -> Float[Array, "..."]:
    """KL(softmax(z0) ‖ softmax(z0 + δ)) over the last axis, from the step δ itself, without cancellation.

    The Bregman divergence of logsumexp: lse(z0 + δ) − lse(z0) − ⟨p0, δ⟩ = log E_p0[e^δc] with
    δc = δ − E_p0[δ]; written as log1p(E_p0[e^δc − 1 − δc] + r) − r, r = E_p0[δc] (zero up to rounding),
    every term is second order in δ, so it keeps its relative accuracy where the divergence is far below
    the rounding of lse(z0) (subtracting log-probabilities would not: float32 line searches then stall).
    """
    logp0 = jax.nn.log_softmax(logits0, axis=-1)
    p0 = jnp.exp(logp0)
    centred = delta - jnp.sum(p0 * delta, axis=-1, keepdims=True)
    r = jnp.sum(p0 * centred, axis=-1)
    small = jnp.max(jnp.abs(centred), axis=-1, keepdims=True) <= 1
    excess = jnp.sum(p0 * expm1_minus_x(jnp.where(small, centred, 0)), axis=-1)
    # Long steps (|δc| > 1, a divergence far above rounding): log E_p0[e^δc] as a logsumexp, which cannot overflow.
    long = jax.nn.logsumexp(logp0 + jnp.where(small, 0, centred), axis=-1)
    return jnp.maximum(jnp.where(small[..., 0], jnp.log1p(excess + r), long) - r, 0)


class Loss(eqx.Module):
    """A separable loss L(z, y) = (1/N) Σ_rows ℓ(z_j, y_j) on (n, c) predictions.

    `curvature` bounds the largest eigenvalue of ∇²ℓ over every z (per row): ℓ is `curvature`-smooth, so L* is
    (N / curvature)-strongly convex, which gap-safe screening uses (`certificates.safe_zero`).
    """

    name: ClassVar[str] = "loss"
    curvature: ClassVar[float] = float("inf")

    @abc.abstractmethod
    def normaliser(self, y: Float[Array, "n c"]) -> int:
        """N, the number the summed loss is divided by (computed from the global shape)."""

    @abc.abstractmethod
    def value(self, z: Float[Array, "n c"], y: Float[Array, "n c"], N: int, rows: Rows | None = None) -> Scalar:
        """L(z) = (1/N) Σ ℓ(z_j, y_j)."""

    @abc.abstractmethod
    def grad(self, z: Float[Array, "n c"], y: Float[Array, "n c"], N: int) -> Float[Array, "n c"]:
        """∇L(z)."""

    @abc.abstractmethod
    def conjugate(self, theta: Float[Array, "n c"], y: Float[Array, "n c"], N: int, rows: Rows | None = None) -> Scalar:
        """L*(θ) = sup_z ⟨θ, z⟩ − L(z) (+inf outside its domain)."""

    @abc.abstractmethod
    def fenchel_young_gap(
        self,
        z: Float[Array, "n c"],
        theta: Float[Array, "n c"],
        y: Float[Array, "n c"],
        N: int,
        rows: Rows | None = None,
    ) -> Scalar:
        """L(z) + L*(θ) − ⟨θ, z⟩ ≥ 0, computed without cancellation."""

    @abc.abstractmethod
    def bregman(
        self, z1: Float[Array, "n c"], z0: Float[Array, "n c"], y: Float[Array, "n c"], N: int, rows: Rows | None = None
    ) -> Scalar:
        """L(z1) − L(z0) − ⟨∇L(z0), z1 − z0⟩ ≥ 0."""

    @abc.abstractmethod
    def hvp(
        self, z: Float[Array, "n c"], dz: Float[Array, "n c"], y: Float[Array, "n c"], N: int
    ) -> Float[Array, "n c"]:
        """∇²L(z) dz."""

    @abc.abstractmethod
    def hessian_diagonal(self, z: Float[Array, "n c"], y: Float[Array, "n c"], N: int) -> Float[Array, "n c"]:
        """h ≥ 0, the diagonal of ∇²L(z) (the whole Hessian for losses that act entry by entry)."""

    @abc.abstractmethod
    def metric(self, z: Float[Array, "n c"], y: Float[Array, "n c"]) -> Scalar:
        """A readable score of predictions: mean squared error, or accuracy for classification."""

    metric_name: ClassVar[str] = "metric"

    def prox(self, w: Float[Array, "n c"], y: Float[Array, "n c"], N: int, t: Scalar) -> Float[Array, "n c"]:
        """argmin_z L(z) + ‖z − w‖²/(2t) (row by row: no reduction over rows)."""
        raise NotImplementedError(f"the {self.name} loss has no prox (ADMM needs one)")

    def invalid_targets(self, y: Float[Array, "n c"]) -> tuple[Array, str]:
        """For traced targets (n, c): whether any lies outside the loss's domain, and the message to stop with."""
        return jnp.zeros((), bool), ""

    def prepare_targets(self, y: ArrayLike, c: int | None = None) -> np.ndarray:
        """Check targets on the host and give them the (n, c) float form the solvers use."""
        y = np.asarray(y)
        if not np.issubdtype(y.dtype, np.number) and y.dtype != bool:
            raise ValueError(f"y must be numeric; got dtype {y.dtype}")
        return y.reshape(y.shape[0], -1) if y.ndim == 1 else y


class Squared(Loss):
    """L(z) = (1/(2nc)) Σ_jk (z_jk − y_jk)²: the mean of ½(ŷ − y)² over all n·c entries (as scnn)."""

    name: ClassVar[str] = "squared"
    metric_name: ClassVar[str] = "mse"
    curvature: ClassVar[float] = 1.0

    def normaliser(self, y):
        return y.shape[0] * y.shape[1]

    def value(self, z, y, N, rows=None):
        return 0.5 * row_sum(jnp.square(z - y), rows) / N

    def grad(self, z, y, N):
        return (z - y) / N

    def conjugate(self, theta, y, N, rows=None):
        return 0.5 * N * row_sum(jnp.square(theta), rows) + row_sum(theta * y, rows)

    def fenchel_young_gap(self, z, theta, y, N, rows=None):
        return 0.5 * row_sum(jnp.square(z - y - N * theta), rows) / N

    def bregman(self, z1, z0, y, N, rows=None):
        return 0.5 * row_sum(jnp.square(z1 - z0), rows) / N

    def hvp(self, z, dz, y, N):
        return dz / N

    def hessian_diagonal(self, z, y, N):
        return jnp.full_like(z, 1 / N)

    def prox(self, w, y, N, t):
        return (w + (t / N) * y) / (1 + t / N)

    def metric(self, z, y):
        return jnp.mean(jnp.square(z - y))


class Logistic(Loss):
    """L(z) = (1/(nc)) Σ_jk log(1 + exp(−y_jk z_jk)) for labels y ∈ {−1, +1}."""

    name: ClassVar[str] = "logistic"
    metric_name: ClassVar[str] = "accuracy"
    curvature: ClassVar[float] = 0.25  # σ(u)(1 − σ(u)) ≤ 1/4

    def normaliser(self, y):
        return y.shape[0] * y.shape[1]

    def value(self, z, y, N, rows=None):
        return row_sum(jax.nn.softplus(-y * z), rows) / N

    def grad(self, z, y, N):
        return -y * jax.nn.sigmoid(-y * z) / N

    def conjugate(self, theta, y, N, rows=None):
        p = -N * theta * y  # must lie in [0, 1]
        inside = row_all((p >= 0) & (p <= 1), rows)
        val = row_sum(xlogy(p, p) + xlogy(1 - p, 1 - p), rows) / N
        return jnp.where(inside, val, jnp.inf)

    def fenchel_young_gap(self, z, theta, y, N, rows=None):
        # N θ y = −p with p ∈ [0, 1]; the gap is Σ KL(Bernoulli(p) ‖ Bernoulli(σ(−y z))) / N.
        p = jnp.clip(-N * theta * y, 0, 1)
        u = y * z
        kl = xlogy(p, p) + xlogy(1 - p, 1 - p) - p * jax.nn.log_sigmoid(-u) - (1 - p) * jax.nn.log_sigmoid(u)
        return row_sum(jnp.maximum(kl, 0), rows) / N

    def bregman(self, z1, z0, y, N, rows=None):
        # softplus(−u) = logsumexp(0, −u) with u = y z: the two-class softmax Bregman divergence.
        zero = jnp.zeros_like(z0)
        logits0 = jnp.stack([zero, -y * z0], axis=-1)
        return row_sum(softmax_bregman(jnp.stack([zero, -y * (z1 - z0)], axis=-1), logits0), rows) / N

    def hvp(self, z, dz, y, N):
        s = jax.nn.sigmoid(y * z)
        return s * (1 - s) * dz / N

    def hessian_diagonal(self, z, y, N):
        s = jax.nn.sigmoid(y * z)
        return s * (1 - s) / N

    def prox(self, w, y, N, t):
        # In u = y z: u − y w = (t/N) σ(−u), so u lies in [y w, y w + t/N]. Newton's steps, replaced by
        # bisection when one leaves the bracket or the last one did not halve it (so it at least halves
        # every two steps), converge from anywhere; 100 of them reach round-off for any t.
        r = t / N
        lo, hi = y * w, y * w + r

        def step(_, c):
            u, lo, hi, width = c
            g = u - y * w - r * jax.nn.sigmoid(-u)  # t × the derivative
            lo, hi = jnp.where(g < 0, u, lo), jnp.where(g > 0, u, hi)
            s = jax.nn.sigmoid(u)
            newton = u - g / (1 + r * s * (1 - s))
            ok = (newton > lo) & (newton < hi) & (hi - lo <= 0.5 * width)
            return jnp.where(ok, newton, 0.5 * (lo + hi)), lo, hi, jnp.where(ok, width, hi - lo)

        start = (lo + 0.5 * r * jax.nn.sigmoid(-lo), lo, hi, 2 * (hi - lo))
        u, _, _, _ = jax.lax.fori_loop(0, 100, step, start)
        return y * u

    def metric(self, z, y):
        return jnp.mean(jnp.where(z >= 0, 1.0, -1.0) == y)

    def invalid_targets(self, y):
        return jnp.any(jnp.abs(y) != 1), "y must hold labels in {-1, +1} for the logistic loss"

    def prepare_targets(self, y, c=None):
        y = super().prepare_targets(y)
        bad = ~np.isin(y, (-1, 1))
        if bad.any():
            raise ValueError(
                f"y must hold labels in {{-1, +1}} for the logistic loss; got values {np.unique(y[bad])[:5].tolist()}"
            )
        return y


class CrossEntropy(Loss):
    """L(Z) = (1/n) Σ_j [logsumexp(z_j) − ⟨y_j, z_j⟩] for one-hot (or probability) rows y_j."""

    name: ClassVar[str] = "cross_entropy"
    metric_name: ClassVar[str] = "accuracy"
    curvature: ClassVar[float] = 0.5  # diag(p) − ppᵀ ⪯ ½ I

    def normaliser(self, y):
        return y.shape[0]

    def value(self, z, y, N, rows=None):
        return row_sum(jax.nn.logsumexp(z, axis=1) - jnp.sum(y * z, axis=1), rows) / N

    def grad(self, z, y, N):
        return (jax.nn.softmax(z, axis=1) - y) / N

    def conjugate(self, theta, y, N, rows=None):
        q = N * theta + y  # each row must lie in the simplex
        tol = 10 * jnp.finfo(q.dtype).eps
        inside = row_all(q >= -tol, rows) & row_all(jnp.abs(jnp.sum(q, axis=1) - 1) <= tol * q.shape[1], rows)
        q = jnp.clip(q, 0, 1)
        return jnp.where(inside, row_sum(xlogy(q, q), rows) / N, jnp.inf)

    def fenchel_young_gap(self, z, theta, y, N, rows=None):
        q = jnp.clip(N * theta + y, 0, 1)
        kl = jnp.sum(xlogy(q, q) - q * jax.nn.log_softmax(z, axis=1), axis=1)
        return row_sum(jnp.maximum(kl, 0), rows) / N

    def bregman(self, z1, z0, y, N, rows=None):
        return row_sum(softmax_bregman(z1 - z0, z0), rows) / N

    def hvp(self, z, dz, y, N):
        p = jax.nn.softmax(z, axis=1)
        return p * (dz - jnp.sum(p * dz, axis=1, keepdims=True)) / N

    def hessian_diagonal(self, z, y, N):
        p = jax.nn.softmax(z, axis=1)
        return p * (1 - p) / N

    def metric(self, z, y):
        return jnp.mean(jnp.argmax(z, axis=1) == jnp.argmax(y, axis=1))

    def invalid_targets(self, y):
        sums = jnp.sum(y, axis=1)
        bad = jnp.any(y < 0) | jnp.any(jnp.abs(sums - 1) > 1e-6 + 8 * jnp.finfo(y.dtype).eps * y.shape[1])
        return bad, "y must have non-negative rows summing to 1 (one-hot) for cross_entropy"

    def prepare_targets(self, y, c=None):
        y = np.asarray(y)
        if y.ndim == 1 or (y.ndim == 2 and y.shape[1] == 1 and np.issubdtype(y.dtype, np.integer)):
            y = y.reshape(-1)
            if not (np.issubdtype(y.dtype, np.integer) or np.all(y == np.round(y))):
                raise ValueError("y must hold integer class labels (n,) or one-hot rows (n, c) for cross_entropy")
            if y.size and y.min() < 0:
                raise ValueError(f"y class labels must be >= 0 for cross_entropy; got {y.min()}")
            k = int(y.max()) + 1 if c is None else int(c)
            if y.size and y.max() >= k:
                raise ValueError(f"y class labels must be < {k}; got {y.max()}")
            return np.eye(k)[y.astype(np.int64)]
        if y.ndim != 2:
            raise ValueError(f"y must be (n,) labels or (n, c) one-hot rows; got shape {y.shape}")
        rows = y.sum(axis=1)
        if np.any(y < 0) or not np.allclose(rows, 1.0, atol=1e-6):
            raise ValueError("y must have non-negative rows summing to 1 (one-hot) for cross_entropy")
        return y


_LOSSES = {cls.name: cls for cls in (Squared, Logistic, CrossEntropy)}


def get_loss(loss: str | Loss) -> Loss:
    """Resolve a loss name ("squared", "logistic", "cross_entropy") or instance."""
    if isinstance(loss, Loss):
        return loss
    if loss not in _LOSSES:
        raise ValueError(f"loss must be one of {sorted(_LOSSES)} or a Loss instance; got {loss!r}")
    return _LOSSES[loss]()
