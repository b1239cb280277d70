"""adelie's group-lasso path on the gated ReLU program, run in adelie's own environment (it needs numpy < 2).

    python adelie_path.py problem.npz result.npz --tol 1e-12

problem.npz holds X (n, d), y (n,), masks (n, P) and lams (L,), float64; result.npz gets the weights (L, P, d)
of each λ and the wall time of the whole path (`adelie.grpnet` on `adelie.matrix.convex_relu(X, masks,
gated=True)`, one thread, groups of d columns with unit penalty weights, no intercept, no early exit). Its
Gaussian loss (1/n) Σ (−y η + η²/2) is `solve_gated`'s squared loss less the constant ‖y‖²/(2n), so the weights
are comparable point for point; the caller evaluates their objectives (`working_sets.py --adelie`).
"""

from __future__ import annotations

import argparse
import time

import adelie
import numpy as np


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("problem")
    p.add_argument("result")
    p.add_argument("--tol", type=float, default=1e-12)
    args = p.parse_args()
    data = np.load(args.problem)
    X, y, masks, lams = (data[k] for k in ("X", "y", "masks", "lams"))
    n, d = X.shape
    P = masks.shape[1]
    X = np.asfortranarray(X, dtype=np.float64)
    A = adelie.matrix.convex_relu(X, np.asfortranarray(masks.astype(bool)), gated=True, n_threads=1)
    t0 = time.perf_counter()
    state = adelie.grpnet(
        A,
        adelie.glm.gaussian(np.asarray(y, dtype=np.float64)),
        groups=np.arange(0, P * d, d),
        penalty=np.ones(P),
        lmda_path=np.asarray(lams, dtype=np.float64),
        intercept=False,
        early_exit=False,
        tol=args.tol,
        n_threads=1,
        progress_bar=False,
    )
    seconds = time.perf_counter() - t0
    betas = np.asarray(state.betas.toarray()).reshape(len(lams), P, d)
    np.savez(args.result, weights=betas, seconds=seconds, lams=np.asarray(state.lmdas))


if __name__ == "__main__":
    main()
