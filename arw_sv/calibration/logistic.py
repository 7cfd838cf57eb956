"""Class-balanced logistic regression, the map behind every calibrator here.

Scores become log-likelihood ratios (LLRs) as in BOSARIS / NIST SRE practice: a logistic
regression of the trial label on a few features of the score, with the targets and the
non-targets weighted to equal total weight, so that the fitted log-odds is an LLR (the
prior of the calibration trials is divided out). The features are ``[s, 1]`` for linear
(global) calibration, and ``[ln p, -ln(1 - p), 1]`` with ``p = (s + 1) / 2`` for beta
calibration (Kull et al., 2017; FairCal's per-cluster map), whose two slopes are kept
non-negative so the map stays monotone (a negative one is dropped and the rest refitted,
as the ``betacal`` package does).

Solved by Newton's method on at most three parameters: exact, and fast on millions of
trials. ``betacal`` (last release 2021) fits the same model through scikit-learn's
``LogisticRegression``; the tests check the solution against scikit-learn.

Shape legend (the package one, :mod:`arw_sv`): N trials; the features are 2 or 3 columns.
"""

from __future__ import annotations

import numpy as np

_EPS = 1e-6  # p is clipped to [eps, 1 - eps] before the logs
_RIDGE = 1e-6  # a tiny L2 term keeps Newton's Hessian invertible on separable data


def balanced_weights(labels: np.ndarray) -> np.ndarray:
    """Per-trial weights giving targets and non-targets equal total weight (mean 1).

    Shape:
        labels: (N,) -> (N,).
    """
    target = np.asarray(labels).astype(bool)
    n_tar, n = int(target.sum()), target.size
    if n_tar == 0 or n_tar == n:
        raise ValueError("calibration needs target and non-target trials")
    return np.where(target, n / (2.0 * n_tar), n / (2.0 * (n - n_tar)))


def fit_logistic(features: np.ndarray, labels: np.ndarray, max_iter: int = 50) -> np.ndarray:
    """Coefficients of the class-balanced logistic regression (the last feature should be
    the constant 1), by Newton's method with a tiny ridge.

    Shape:
        features: (N, 2 or 3); labels: (N,) -> (2 or 3,).
    """
    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(labels).astype(np.float64)
    w = balanced_weights(labels)
    coef = np.zeros(x.shape[1])
    for _ in range(max_iter):
        z = x @ coef
        p = 0.5 * (1.0 + np.tanh(0.5 * z))  # the logistic function without overflow
        grad = x.T @ (w * (p - y)) + _RIDGE * coef
        hess = (x * (w * p * (1.0 - p))[:, None]).T @ x + _RIDGE * np.eye(x.shape[1])
        step = np.linalg.solve(hess, grad)
        coef -= step
        if np.abs(step).max() < 1e-10:
            break
    return coef


def beta_features(scores: np.ndarray) -> np.ndarray:
    """``[ln p, -ln(1 - p), 1]`` of cosine scores, ``p = (s + 1) / 2`` clipped.

    Shape:
        scores: (N,) -> (N, 3).
    """
    p = np.clip((np.asarray(scores, dtype=np.float64) + 1.0) / 2.0, _EPS, 1.0 - _EPS)
    return np.stack([np.log(p), -np.log1p(-p), np.ones_like(p)], axis=1)


def fit_beta(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Beta calibration ``(a, b, c)``: ``LLR = a ln p - b ln(1 - p) + c``, ``a, b >= 0``.

    Shape:
        scores, labels: (N,) -> (3,).
    """
    x = beta_features(scores)
    coef = fit_logistic(x, labels)
    if coef[0] < 0 or coef[1] < 0:  # keep the map monotone: drop the negative slope
        keep = [1, 2] if coef[0] < coef[1] else [0, 2]
        sub = fit_logistic(x[:, keep], labels)
        coef = np.zeros(3)
        coef[keep] = sub
        if coef[0] < 0 or coef[1] < 0:  # both would be negative: a constant map
            coef = np.array([0.0, 0.0, fit_logistic(x[:, 2:], labels)[0]])
    return coef


def apply_beta(coef: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """LLRs of cosine scores under beta maps; ``coef`` (3,) or one row per score (N, 3).

    Shape:
        coef: (3,) or (N, 3); scores: (N,) -> (N,).
    """
    x = beta_features(scores)
    return (x * np.asarray(coef)).sum(axis=-1) if np.ndim(coef) == 2 else x @ np.asarray(coef)


def fit_linear(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Linear calibration ``(a, c)``: ``LLR = a s + c``. Shape: (N,), (N,) -> (2,)."""
    s = np.asarray(scores, dtype=np.float64)
    return fit_logistic(np.stack([s, np.ones_like(s)], axis=1), labels)
