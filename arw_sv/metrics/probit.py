"""The probit (inverse standard-normal CDF) in numpy, for the DET curve's axes.

``scipy.special.ndtri`` would do, but importing ``scipy.special`` costs about 0.25 s, a
quarter of the one-second budget of ``arw-sv eval --scores``. This is Wichura's algorithm
AS241 (PPND16, Applied Statistics 37(3), 1988), accurate to about 1e-16 relative, the same
rational approximations as Python's ``statistics.NormalDist.inv_cdf``, vectorised. Both
of those are the references of ``tests/test_metrics.py``.
"""

from __future__ import annotations

import numpy as np

# Coefficients, highest power first, of the three regions of AS241.
_CENTRAL_NUM = (
    2.5090809287301226727e3,
    3.3430575583588128105e4,
    6.7265770927008700853e4,
    4.5921953931549871457e4,
    1.3731693765509461125e4,
    1.9715909503065514427e3,
    1.3314166789178437745e2,
    3.3871328727963666080e0,
)
_CENTRAL_DEN = (
    5.2264952788528545610e3,
    2.8729085735721942674e4,
    3.9307895800092710610e4,
    2.1213794301586595867e4,
    5.3941960214247511077e3,
    6.8718700749205790830e2,
    4.2313330701600911252e1,
    1.0,
)
_NEAR_NUM = (
    7.7454501427834140764e-4,
    2.2723844989269184583e-2,
    2.4178072517745061177e-1,
    1.2704582524523683826e0,
    3.6478483247632046050e0,
    5.7694972214606914055e0,
    4.6303378461565452959e0,
    1.4234371107496835773e0,
)
_NEAR_DEN = (
    1.0507500716444168432e-9,
    5.4759380849953449460e-4,
    1.5198666563616457197e-2,
    1.4810397642748007459e-1,
    6.8976733498510000455e-1,
    1.6763848301838038494e0,
    2.0531916266377588219e0,
    1.0,
)
_TAIL_NUM = (
    2.0103343992922881327e-7,
    2.7115555687434875782e-5,
    1.2426609473880784386e-3,
    2.6532189526576123093e-2,
    2.9656057182850489123e-1,
    1.7848265399172913358e0,
    5.4637849111641143699e0,
    6.6579046435011037772e0,
)
_TAIL_DEN = (
    2.0442631033899397856e-15,
    1.4215117583164458887e-7,
    1.8463183175100546818e-5,
    7.8686913114561325910e-4,
    1.4875361290850614853e-2,
    1.3692988092273580531e-1,
    5.9983220655588793769e-1,
    1.0,
)


def _horner(coefficients: tuple[float, ...], x: np.ndarray) -> np.ndarray:
    """The polynomial at ``x`` by Horner's rule, in place (np.polyval's operations)."""
    y = np.full_like(x, coefficients[0])
    for c in coefficients[1:]:
        y *= x
        y += c
    return y


def probit(p) -> np.ndarray:
    """The standard-normal quantile of each probability (``-inf`` at 0, ``inf`` at 1).

    Shape:
        p: any; output: the same, float64.

    Raises:
        ValueError: a probability outside [0, 1] or NaN.
    """
    p = np.asarray(p, dtype=np.float64)
    if not np.all((p >= 0) & (p <= 1)):
        raise ValueError("probit: probabilities must lie in [0, 1]")
    q = p - 0.5
    out = np.empty_like(p)
    central = np.abs(q) <= 0.425
    qc = q[central]
    r = 0.180625 - qc * qc
    out[central] = _horner(_CENTRAL_NUM, r) * qc / _horner(_CENTRAL_DEN, r)
    tails = ~central
    qt = q[tails]
    with np.errstate(divide="ignore"):
        r = np.sqrt(-np.log(np.where(qt <= 0, p[tails], 1.0 - p[tails])))
    x = np.empty_like(r)
    near = r <= 5.0
    rn = r[near] - 1.6
    x[near] = _horner(_NEAR_NUM, rn) / _horner(_NEAR_DEN, rn)
    rf = r[~near] - 5.0
    with np.errstate(invalid="ignore"):  # r = inf at p = 0 or 1: inf / inf
        x[~near] = _horner(_TAIL_NUM, rf) / _horner(_TAIL_DEN, rf)
    x[np.isinf(r)] = np.inf
    out[tails] = np.where(qt < 0, -x, x)
    return out
