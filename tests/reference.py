"""Independent reference solutions: cvxpy + Clarabel (interior point) in float64."""

from __future__ import annotations

import cvxpy as cp
import numpy as np
import scipy.special


def clarabel_gated(X, Y, masks, lam, loss: str = "squared") -> tuple[float, np.ndarray]:
    """Solve the gated program with Clarabel. Y is (n, c) (one-hot for cross_entropy).

    Returns (optimal objective, weights (P, d, c)).
    """
    X = np.asarray(X, dtype=np.float64)
    Y = np.asarray(Y, dtype=np.float64)
    m = np.asarray(masks, dtype=np.float64)
    n, d = X.shape
    P = m.shape[1]
    c = Y.shape[1]
    Ws = [cp.Variable((P, d)) for _ in range(c)]
    preds = [cp.sum(cp.multiply(m, X @ W.T), axis=1) for W in Ws]
    if loss == "squared":
        fit = sum(cp.sum_squares(preds[k] - Y[:, k]) for k in range(c)) / (2 * n * c)
    elif loss == "logistic":
        fit = sum(cp.sum(cp.logistic(-cp.multiply(Y[:, k], preds[k]))) for k in range(c)) / (n * c)
    elif loss == "cross_entropy":
        Z = cp.vstack(preds).T
        fit = (cp.sum(cp.log_sum_exp(Z, axis=1)) - cp.sum(cp.multiply(Y, Z))) / n
    else:
        raise ValueError(loss)
    penalty = lam * sum(cp.sum(cp.norm(W, 2, axis=1)) for W in Ws)
    problem = cp.Problem(cp.Minimize(fit + penalty))
    problem.solve(solver=cp.CLARABEL, tol_gap_abs=1e-12, tol_gap_rel=1e-12, tol_feas=1e-12, max_iter=400)
    if problem.status not in ("optimal", "optimal_inaccurate"):
        raise RuntimeError(f"Clarabel failed: {problem.status}")
    return float(problem.value), np.stack([W.value for W in Ws], axis=-1)


def clarabel_relu(X, Y, masks, lam, loss: str = "squared", relax=None) -> float:
    """Solve the exact ReLU program (cone-constrained group lasso) with Clarabel; Y is (n, c).

    relax: None, or (E_U, E_V), each (n, P, c) ≥ 0: the constraint of row j, block i and output k relaxed to
    ((2D_i − I) X u_ik)_j ≥ −E[j, i, k] (the program whose optimum p*_E a slightly infeasible point's gap
    bounds, with E its own violations; `certificates.relu_duality_gap`).
    """
    X = np.asarray(X, dtype=np.float64)
    Y = np.asarray(Y, dtype=np.float64)
    m = np.asarray(masks, dtype=np.float64)
    n, d = X.shape
    P = m.shape[1]
    c = Y.shape[1]
    S = 2 * m - 1
    Us = [cp.Variable((P, d)) for _ in range(c)]
    Vs = [cp.Variable((P, d)) for _ in range(c)]
    preds = [cp.sum(cp.multiply(m, X @ (U - V).T), axis=1) for U, V in zip(Us, Vs, strict=False)]
    if loss == "squared":
        fit = sum(cp.sum_squares(preds[k] - Y[:, k]) for k in range(c)) / (2 * n * c)
    elif loss == "logistic":
        fit = sum(cp.sum(cp.logistic(-cp.multiply(Y[:, k], preds[k]))) for k in range(c)) / (n * c)
    elif loss == "cross_entropy":
        Z = cp.vstack(preds).T
        fit = (cp.sum(cp.log_sum_exp(Z, axis=1)) - cp.sum(cp.multiply(Y, Z))) / n
    else:
        raise ValueError(loss)
    penalty = lam * sum(
        cp.sum(cp.norm(U, 2, axis=1)) + cp.sum(cp.norm(V, 2, axis=1)) for U, V in zip(Us, Vs, strict=True)
    )
    if relax is None:
        relax = (np.zeros((n, P, c)), np.zeros((n, P, c)))
    E = [relax[0][:, :, k] for k in range(c)] + [relax[1][:, :, k] for k in range(c)]
    cones = [cp.multiply(S, X @ W.T) >= -e for W, e in zip(Us + Vs, E, strict=True)]
    problem = cp.Problem(cp.Minimize(fit + penalty), cones)
    # Relaxations by a solution's tiny violations (entries ~1e-14) can stop Clarabel with a numerical error at
    # 1e-12 (seen on diabetes at λ = 1 when the AL's GEMMs ran on two threads); at 1e-10 it is still within the
    # 1e-9 margins its callers allow.
    for tol in (1e-12, 1e-10):
        try:
            problem.solve(solver=cp.CLARABEL, tol_gap_abs=tol, tol_gap_rel=tol, tol_feas=tol, max_iter=400)
        except cp.error.SolverError:
            continue
        if problem.status in ("optimal", "optimal_inaccurate"):
            return float(problem.value)
    raise RuntimeError(f"Clarabel failed: {problem.status}")


def reference_value(name: str, z: np.ndarray, y: np.ndarray) -> float:
    """L(z, y) written out in numpy from the losses' definitions."""
    n, c = y.shape
    if name == "squared":
        return 0.5 * np.sum((z - y) ** 2) / (n * c)
    if name == "logistic":
        return np.sum(np.logaddexp(0.0, -y * z)) / (n * c)
    return np.sum(scipy.special.logsumexp(z, axis=1) - np.sum(y * z, axis=1)) / n


def reference_conjugate(name: str, theta: np.ndarray, y: np.ndarray) -> float:
    """L*(θ) = sup_z ⟨θ, z⟩ − L(z), derived by hand (the sup is attained at ∇L(z) = θ)."""
    n, c = y.shape
    if name == "squared":
        N = n * c  # z = y + Nθ
        return float(np.sum(theta * y) + 0.5 * N * np.sum(theta**2))
    if name == "logistic":
        N = n * c  # per entry θ = −y σ(−y z)/N, so p = −Nθy = σ(−y z) ∈ [0, 1]: negative binary entropy
        p = -N * theta * y
        if np.any(p < 0) or np.any(p > 1):
            return np.inf
        return float(np.sum(scipy.special.xlogy(p, p) + scipy.special.xlogy(1 - p, 1 - p)) / N)
    N = n  # per row θ = (softmax(z) − y)/N, so q = Nθ + y lies in the simplex: negative entropy
    q = N * theta + y
    if np.any(q < -1e-14) or np.any(np.abs(q.sum(axis=1) - 1) > 1e-12):
        return np.inf
    q = np.clip(q, 0, 1)
    return float(np.sum(scipy.special.xlogy(q, q)) / N)


def clarabel_nuclear(X, Y, masks, lam, loss: str = "squared", model: str = "gated") -> float:
    """p* of the nuclear-norm program with Clarabel: λ Σ_i ‖U_i‖_* over d×c blocks (Y (n, c), one-hot for
    cross_entropy). model="relu": blocks U_i, V_i with every column in pattern i's cone (the relaxation)."""
    X = np.asarray(X, dtype=np.float64)
    Y = np.asarray(Y, dtype=np.float64)
    m = np.asarray(masks, dtype=np.float64)
    n, d = X.shape
    P, c = m.shape[1], Y.shape[1]
    Us = [cp.Variable((d, c)) for _ in range(P)]
    Vs = [cp.Variable((d, c)) for _ in range(P)] if model == "relu" else []
    Z = sum(cp.multiply(m[:, [i]], X @ Us[i]) for i in range(P))
    if Vs:
        Z = Z - sum(cp.multiply(m[:, [i]], X @ Vs[i]) for i in range(P))
    if loss == "squared":
        fit = cp.sum_squares(Z - Y) / (2 * n * c)
    elif loss == "cross_entropy":
        fit = (cp.sum(cp.log_sum_exp(Z, axis=1)) - cp.sum(cp.multiply(Y, Z))) / n
    else:
        raise ValueError(loss)
    S = 2 * m - 1
    cones = [cp.multiply(S[:, [i]], X @ W) >= 0 for i, W in enumerate(Us)] + [
        cp.multiply(S[:, [i]], X @ W) >= 0 for i, W in enumerate(Vs)
    ]
    problem = cp.Problem(cp.Minimize(fit + lam * sum(cp.normNuc(W) for W in Us + Vs)), cones if Vs else [])
    problem.solve(solver=cp.CLARABEL, tol_gap_abs=1e-11, tol_gap_rel=1e-11, tol_feas=1e-11, max_iter=400)
    if problem.status not in ("optimal", "optimal_inaccurate"):
        raise RuntimeError(f"Clarabel failed: {problem.status}")
    return float(problem.value)


def clarabel_conv(patches, Y, masks, lam, loss: str = "squared", model: str = "gated", penalty: str = "group") -> float:
    """p* of the convolutional program with Clarabel, built from its definition: block i's data are
    Z_i = Σ_k diag(masks[:, k, i]) X_k (formed explicitly here), prediction Σ_i Z_i (U_i − V_i), and for
    model="relu" the cone constraints (2 D_ik − I) X_k U_i ≥ 0 at every position k (and for V_i).
    patches (n, K, h), masks (n, K, P), Y (n, c) (one-hot for cross_entropy); penalty "group" (‖·‖₂ per
    column of U_i) or "nuclear" (‖U_i‖_*)."""
    X = np.asarray(patches, dtype=np.float64)
    Y = np.asarray(Y, dtype=np.float64)
    m = np.asarray(masks, dtype=np.float64)
    n, K, h = X.shape
    P, c = m.shape[2], Y.shape[1]
    Z = [sum(m[:, k, i][:, None] * X[:, k, :] for k in range(K)) for i in range(P)]
    Us = [cp.Variable((h, c)) for _ in range(P)]
    Vs = [cp.Variable((h, c)) for _ in range(P)] if model == "relu" else []
    pred = sum(Z[i] @ Us[i] for i in range(P))
    if Vs:
        pred = pred - sum(Z[i] @ Vs[i] for i in range(P))
    if loss == "squared":
        fit = cp.sum_squares(pred - Y) / (2 * n * c)
    elif loss == "logistic":
        fit = cp.sum(cp.logistic(-cp.multiply(Y, pred))) / (n * c)
    elif loss == "cross_entropy":
        fit = (cp.sum(cp.log_sum_exp(pred, axis=1)) - cp.sum(cp.multiply(Y, pred))) / n
    else:
        raise ValueError(loss)
    norm = cp.normNuc if penalty == "nuclear" else (lambda W: cp.sum(cp.norm(W, 2, axis=0)))
    S = 2 * m - 1
    cones = [cp.multiply(S[:, k, [i]], X[:, k, :] @ W) >= 0 for k in range(K) for i, W in enumerate(Us)]
    cones += [cp.multiply(S[:, k, [i]], X[:, k, :] @ W) >= 0 for k in range(K) for i, W in enumerate(Vs)]
    problem = cp.Problem(cp.Minimize(fit + lam * sum(norm(W) for W in Us + Vs)), cones if Vs else [])
    problem.solve(solver=cp.CLARABEL, tol_gap_abs=1e-11, tol_gap_rel=1e-11, tol_feas=1e-11, max_iter=400)
    if problem.status not in ("optimal", "optimal_inaccurate"):
        raise RuntimeError(f"Clarabel failed: {problem.status}")
    return float(problem.value)
