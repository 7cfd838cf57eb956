"""Score calibrators: fitted on calibration pairs, they turn cosine scores into LLRs.

Every calibrator is fitted on trials among *calibration speakers* (speaker ids only, no
group labels), given as indices into a matrix of their utterance embeddings, and applied to
any trial whose two sides' embeddings are known. Methods (``METHODS``):

- ``global``: one linear logistic map ``LLR = a s + c`` (BOSARIS / NIST SRE practice).
  Monotone, so no EER or per-group EER changes; the baseline every verifier should have.
- ``fsn``: Fair Score Normalisation (Terhörst et al., 2020). k-means clusters of the
  calibration embeddings; cluster c's threshold at ``target_fmr`` over the non-target pairs
  touching it, minus the global one, is its offset ``d_c``; a trial's score becomes
  ``s - (d(c_e) + d(c_t)) / 2``, then a global linear map gives the LLR.
- ``faircal``: FairCal (Salvador et al., ICLR 2022). k-means; per cluster k a beta
  calibration ``mu_k`` on the pairs with at least one side in k (``S_k``); a trial with
  sides in k1, k2 gets ``P = theta mu_k1(s) + (1 - theta) mu_k2(s)``,
  ``theta = |S_k1| / (|S_k1| + |S_k2|)``, and ``LLR = logit(P)`` (the maps are fitted
  class-balanced, so their posteriors are at prior 1/2).
- ``softcal`` (ours): FairCal's per-cluster maps, mixed softly: each side weighs its
  ``top`` nearest centroids by ``softmax(cosine / temperature)``, the two sides equally,
  and ``P`` is the weighted mean of those clusters' posteriors. No hard boundary between
  regions, and a trial near two clusters is calibrated by both (after the 2026
  "Adaptive Calibration" preprint's neighbourhood idea).
- ``oracle``: FSN with the true groups as the clusters (group labels of calibration and
  test speakers): each group's threshold at ``target_fmr`` moved onto the global one, so
  on its own calibration data every group has the same FMR there. The ceiling of what a
  per-region correction can do for FMR at one threshold; benchmarks only.
- ``oracle_faircal``: FairCal with the true groups as the clusters (FairCal's own oracle:
  per-group calibrated probabilities, which need not mean equal FMR).
- ``quantile`` (ours, issue 28): k-means regions as FSN's; each region's non-target score
  distribution matched to the global one by a monotone piecewise-linear map through 42
  quantiles (FMR 10^-4 to 0.95), so regions share the global FMR at *every* threshold on the
  calibration pairs, not at one; the two sides' maps are averaged, then a global linear map
  gives the LLR. Regions seen through few speakers are shrunk toward the identity
  (``prior_speakers``). Equations: :mod:`arw_sv.calibration.quantile`.
- ``oracle_quantile``: ``quantile`` with the true groups as the regions; benchmarks only.

Any method can be preceded by **AS-norm** against a cohort of calibration utterances
(``fit_calibrator(..., cohort=...)``): the scores are AS-normalised (top ``top_n`` cohort
cosines of each side, :func:`arw_sv.metrics.as_norm`) before the map is fitted and before
it is applied, and the cohort is kept in the calibrator. The cohort's speakers must not be
the fitting pairs' speakers (:func:`arw_sv.calibration.split_cohort` halves the calibration
speakers), or a pair would meet its own speaker in the cohort. AS-norm adapts per
utterance where the clusters adapt per region: on the held-out benchmark AS-norm + FSN
(k=16) is the label-free method that narrows the false-accept gap most
(docs/calibration-log.md).

Shape legend (the package one, :mod:`arw_sv`): N trials, U utterances, D embedding, C clusters.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from arw_sv.calibration.logistic import apply_beta, fit_beta, fit_linear
from arw_sv.calibration.quantile import apply_quantile_maps, fit_quantile_maps

METHODS = (
    "global", "fsn", "faircal", "softcal", "quantile", "oracle", "oracle_faircal",
    "oracle_quantile",
)  # fmt: skip
MIN_TARGETS = 20  # per cluster, for a per-cluster map
MIN_FALSE_ACCEPTS = 10  # non-targets above a cluster's threshold, for FSN's offset


class CalibrationError(ValueError):
    """Calibration input that cannot give a sound calibrator; the message says why."""


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-15, 1.0 - 1e-15)
    return np.log(p) - np.log1p(-p)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))


KMEANS_SAMPLE = 20_000  # utterances k-means is fitted on at most (a seeded sample)


def kmeans_centroids(embeddings: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Unit-norm k-means centroids of unit-normalised embeddings (scikit-learn, k-means++,
    2 starts), fitted on at most :data:`KMEANS_SAMPLE` utterances drawn with ``seed``:
    centroids need far fewer points than the pairs need, and the full set would make
    K = 100 take minutes.

    Shape:
        embeddings: (U, D) -> (C, D).
    """
    from sklearn.cluster import KMeans

    x = _unit(embeddings)
    if k > len(x):
        raise CalibrationError(
            f"{k} clusters need at least {k} calibration utterances, got {len(x)}"
        )
    if len(x) > KMEANS_SAMPLE:
        x = x[np.sort(np.random.default_rng(seed).choice(len(x), KMEANS_SAMPLE, replace=False))]
    model = KMeans(n_clusters=k, n_init=2, random_state=seed).fit(x)
    return _unit(model.cluster_centers_)


@dataclass(frozen=True)
class Calibrator:
    """A fitted calibrator; ``transform`` maps cosine scores to LLRs.

    Attributes:
        method: one of :data:`METHODS`.
        dim: the embedding dimension it was fitted for.
        centroids: (C, D) unit-norm cluster centres (empty for ``global`` and ``oracle``).
        maps: per cluster (or group) beta maps (C, 3); ``fsn``: offsets (C, 1).
        counts: calibration pairs touching each cluster, ``|S_k|`` (C,).
        fallback: the global map (``global``/``fsn``: linear (2,); others: beta (3,)),
            used by the oracle for a group it has no map for.
        groups: the oracle's group names, in ``maps`` order.
        settings: the fitting settings (clusters, target FMR, top, temperature, seed).
        speakers: the calibration speakers (checked against test speakers).
        fingerprint: the embedding model's fingerprint, when known.
        cohort: (E, D) AS-norm cohort embeddings (float32), or None: no normalisation.
    """

    method: str
    dim: int
    centroids: np.ndarray
    maps: np.ndarray
    counts: np.ndarray
    fallback: np.ndarray
    groups: tuple[str, ...] = ()
    settings: dict[str, Any] = field(default_factory=dict)
    speakers: tuple[str, ...] = ()
    fingerprint: str | None = None
    cohort: np.ndarray | None = None

    @property
    def label(self) -> str:
        """The method as reports name it, e.g. ``fsn`` or ``asnorm+fsn``."""
        return self.method if self.cohort is None else f"asnorm+{self.method}"

    # ---- regions ---------------------------------------------------------------------

    def nearest(self, embeddings: np.ndarray, top: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """The ``top`` nearest centroids of each embedding and their cosines.

        Shape:
            embeddings: (U, D) -> (U, top), (U, top).
        """
        embeddings = np.asarray(embeddings)
        if embeddings.ndim != 2 or embeddings.shape[1] != self.dim:
            raise CalibrationError(
                f"the calibrator was fitted on {self.dim}-dim embeddings, got shape "
                f"{embeddings.shape}: embeddings of another model?"
            )
        x = np.asarray(embeddings, dtype=np.float32)
        dots = x @ self.centroids.T.astype(np.float32)  # the argmax needs no norms
        if top == 1:
            idx = dots.argmax(axis=1)[:, None]
        else:
            idx = np.argsort(-dots, axis=1)[:, :top]
        norms = np.sqrt(np.einsum("ud,ud->u", x, x, dtype=np.float64))
        sims = np.take_along_axis(dots, idx, axis=1) / np.maximum(norms, 1e-12)[:, None]
        return idx, sims

    # ---- applying ----------------------------------------------------------------------

    def transform(
        self,
        scores: np.ndarray,
        enroll_embeddings: np.ndarray,
        test_embeddings: np.ndarray,
        *,
        enroll_groups: np.ndarray | None = None,
        test_groups: np.ndarray | None = None,
    ) -> np.ndarray:
        """LLRs of trials from their scores and their two sides' embeddings.

        ``enroll_groups`` / ``test_groups`` (group names) are the oracle's only.

        Shape:
            scores: (N,); enroll_embeddings, test_embeddings: (N, D) -> (N,).
        """
        return self.transform_indexed(
            scores,
            np.arange(len(scores)),
            np.arange(len(scores), 2 * len(scores)),
            np.concatenate([enroll_embeddings, test_embeddings]),
            groups=None
            if enroll_groups is None
            else np.concatenate([np.asarray(enroll_groups), np.asarray(test_groups)]),
        )

    def transform_indexed(
        self,
        scores: np.ndarray,
        enroll: np.ndarray,
        test: np.ndarray,
        embeddings: np.ndarray,
        groups: np.ndarray | None = None,
        stats: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> np.ndarray:
        """:meth:`transform` with the sides as rows of one utterance matrix (each
        utterance's region found once, however many trials name it). ``stats``: each
        row's AS-norm cohort mean and std, when known (see :meth:`normalise`).

        Shape:
            scores, enroll, test: (N,); embeddings: (U, D); groups: (U,) -> (N,).
        """
        s = np.asarray(scores, dtype=np.float64)
        enroll, test = np.asarray(enroll), np.asarray(test)
        if self.cohort is not None:
            s = self.normalise(s, enroll, test, embeddings, stats)
        if self.method == "global":
            return self.fallback[0] * s + self.fallback[1]
        if self.method.startswith("oracle"):
            if groups is None:
                raise CalibrationError("the oracle calibrator needs each side's group")
            index = {g: i for i, g in enumerate(self.groups)}
            region = np.array([index.get(str(g), -1) for g in groups])
            if self.method == "oracle":  # an unknown group (-1) gets no offset
                offsets = np.append(self.maps[:, 0], 0.0)
                shifted = s - 0.5 * (offsets[region[enroll]] + offsets[region[test]])
                return self.fallback[0] * shifted + self.fallback[1]
            if self.method == "oracle_quantile":
                return self._quantile(s, region[enroll], region[test])
            return self._mix_two(s, region[enroll], region[test])
        if self.method == "softcal":
            top = int(self.settings["top"])
            idx, sims = self.nearest(embeddings, top)
            weights = np.exp((sims - sims[:, :1]) / float(self.settings["temperature"]))
            weights /= weights.sum(axis=1, keepdims=True)
            posterior = np.zeros_like(s)
            for side in (enroll, test):
                for j in range(top):
                    llr = apply_beta(self.maps[idx[side, j]], s)
                    posterior += 0.5 * weights[side, j] * _sigmoid(llr)
            return _logit(posterior)
        region = self.nearest(embeddings)[0][:, 0]
        if self.method == "fsn":
            shifted = s - 0.5 * (self.maps[region[enroll], 0] + self.maps[region[test], 0])
            return self.fallback[0] * shifted + self.fallback[1]
        if self.method == "quantile":
            return self._quantile(s, region[enroll], region[test])
        return self._mix_two(s, region[enroll], region[test])

    def normalise(
        self,
        scores: np.ndarray,
        enroll: np.ndarray,
        test: np.ndarray,
        embeddings: np.ndarray,
        stats: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> np.ndarray:
        """AS-norm of scores against the calibrator's cohort (the scores as they are when
        it has none); ``stats``, (U,) each, are the rows' cohort statistics when already
        known (:func:`arw_sv.calibration.stats_cache.cached_cohort_stats`).

        Shape:
            scores, enroll, test: (N,); embeddings: (U, D) -> (N,).
        """
        if self.cohort is None:
            return np.asarray(scores, dtype=np.float64)
        from arw_sv.metrics.asnorm import as_norm

        embeddings = np.asarray(embeddings)
        if embeddings.ndim != 2 or embeddings.shape[1] != self.dim:
            raise CalibrationError(
                f"the calibrator was fitted on {self.dim}-dim embeddings, got shape "
                f"{embeddings.shape}: embeddings of another model?"
            )
        if len(scores) == 0:
            return np.zeros(0)
        top_n = int(self.settings["top_n"])
        return as_norm(scores, enroll, test, embeddings, self.cohort, top_n=top_n, stats=stats)

    def _quantile(self, s: np.ndarray, ka: np.ndarray, kb: np.ndarray) -> np.ndarray:
        """The mean of the two sides' quantile maps, then the global linear map."""
        knots = self.maps.reshape(len(self.maps), 2, -1)
        mapped = 0.5 * (apply_quantile_maps(knots, s, ka) + apply_quantile_maps(knots, s, kb))
        return self.fallback[0] * mapped + self.fallback[1]

    def _mix_two(self, s: np.ndarray, ka: np.ndarray, kb: np.ndarray) -> np.ndarray:
        """FairCal's pair-count-weighted mix of the two sides' maps (-1: the global map)."""
        counts = np.append(self.counts, 1.0).astype(np.float64)  # index -1: fallback
        maps = np.vstack([self.maps, self.fallback[None, :]])
        na, nb = counts[ka], counts[kb]
        theta = na / (na + nb)
        posterior = theta * _sigmoid(apply_beta(maps[ka], s))
        posterior += (1.0 - theta) * _sigmoid(apply_beta(maps[kb], s))
        return _logit(posterior)


# ---- fitting ---------------------------------------------------------------------------


#: ``fit_calibrator``'s ``quantile_pairs`` choices.
QUANTILE_PAIRS = ("touching", "within")


def _touching(k: int, enroll_region: np.ndarray, test_region: np.ndarray) -> list[np.ndarray]:
    """For each cluster, the pairs with at least one side in it (``S_k``)."""
    out = []
    for c in range(k):
        out.append(np.flatnonzero((enroll_region == c) | (test_region == c)))
    return out


def fit_calibrator(
    method: str,
    scores: np.ndarray,
    labels: np.ndarray,
    enroll: np.ndarray,
    test: np.ndarray,
    embeddings: np.ndarray,
    *,
    clusters: int = 16,
    target_fmr: float = 0.01,
    top: int = 4,
    temperature: float = 0.05,
    seed: int = 0,
    groups: np.ndarray | None = None,
    speakers: tuple[str, ...] = (),
    fingerprint: str | None = None,
    cohort: np.ndarray | None = None,
    top_n: int = 300,
    prior_speakers: float = 0.0,
    utterance_speakers: np.ndarray | None = None,
    quantile_pairs: str = "touching",
) -> Calibrator:
    """Fit a calibrator on calibration pairs.

    Args:
        method: one of :data:`METHODS`.
        scores: the pairs' cosine scores.
        labels: 1 same speaker, 0 not.
        enroll: each pair's first utterance, as a row of ``embeddings``.
        test: each pair's second utterance, likewise.
        embeddings: the calibration utterances' embeddings (k-means runs on them).
        clusters: K for ``fsn``, ``faircal``, ``softcal``.
        target_fmr: the false-match rate FSN's thresholds are set at.
        top: ``softcal``'s nearest centroids per side.
        temperature: ``softcal``'s softmax temperature (on cosines).
        seed: k-means seed.
        groups: each utterance's group (``oracle`` only).
        speakers: the calibration speakers, recorded for the overlap check.
        fingerprint: the embedding model's fingerprint, recorded for the model check.
        cohort: AS-norm cohort embeddings (utterances of calibration speakers that no
            pair names), or None. With it the pairs' scores are AS-normalised before the
            fit, and every later ``transform`` normalises first.
        top_n: AS-norm's adaptive cohort size (with ``cohort``).
        prior_speakers: ``quantile`` and ``fsn``: shrink region c's correction by
            ``n_c / (n_c + prior_speakers)``, n_c its speakers (0: no shrinkage).
        utterance_speakers: each utterance's speaker (needed for the shrinkage).
        quantile_pairs: ``quantile`` and ``oracle_quantile``: the non-target pairs a
            region's map is fitted on. ``touching`` (default): every pair with a side in
            the region. ``within``: only pairs with both sides in it, the trials a
            within-group FMR counts (the map is then exact for them; cross-region pairs
            still take the mean of their two sides' maps).

    Raises:
        CalibrationError: an unknown method, or too few pairs for a cluster (named, with
            its counts and what to change).

    Shape:
        scores, labels, enroll, test: (N,); embeddings: (U, D); groups: (U,); cohort: (E, D).
    """
    if method not in METHODS:
        raise CalibrationError(
            f"unknown calibration method {method!r}; one of {', '.join(METHODS)}"
        )
    if method == "softcal":
        check_softcal_settings(top, temperature)
    if quantile_pairs not in QUANTILE_PAIRS:
        raise CalibrationError(
            f"unknown quantile_pairs {quantile_pairs!r}; one of {', '.join(QUANTILE_PAIRS)}"
        )
    if cohort is not None:
        from arw_sv.metrics.asnorm import as_norm

        cohort = _checked_cohort(cohort, np.shape(embeddings), top_n)
        top_n = min(int(top_n), len(cohort))
        s = as_norm(scores, np.asarray(enroll), np.asarray(test), embeddings, cohort, top_n=top_n)
        plain = fit_calibrator(
            method, s, labels, enroll, test, embeddings, clusters=clusters,
            target_fmr=target_fmr, top=top, temperature=temperature, seed=seed,
            groups=groups, speakers=speakers, fingerprint=fingerprint,
            prior_speakers=prior_speakers, utterance_speakers=utterance_speakers,
            quantile_pairs=quantile_pairs,
        )  # fmt: skip
        settings = {**plain.settings, "score_norm": "asnorm", "top_n": top_n}
        return dataclasses.replace(plain, cohort=cohort, settings=settings)
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels).astype(bool)
    enroll, test = np.asarray(enroll), np.asarray(test)
    embeddings = np.asarray(embeddings)
    if not (y.any() and (~y).any()):
        raise CalibrationError(
            "calibration pairs need both same-speaker and different-speaker pairs"
        )
    beta = method in ("faircal", "softcal", "oracle_faircal")
    if beta and (s.min() < -1.0 - 1e-6 or s.max() > 1.0 + 1e-6):
        raise CalibrationError(
            f"{method}'s beta maps read cosine scores in [-1, 1], got scores from "
            f"{s.min():.3g} to {s.max():.3g} (normalised scores?); use fsn or global for them"
        )
    settings: dict[str, Any] = {"seed": seed}
    common = dict(dim=int(embeddings.shape[1]), speakers=tuple(speakers), fingerprint=fingerprint)
    empty = np.zeros((0, embeddings.shape[1]))
    if method == "global":
        return Calibrator(
            method, centroids=empty, maps=np.zeros((0, 3)), counts=np.zeros(0),
            fallback=fit_linear(s, y), settings=settings, **common,
        )  # fmt: skip
    if method.startswith("oracle"):
        if groups is None:
            raise CalibrationError("the oracle needs the calibration utterances' groups")
        names, region = np.unique(np.asarray(groups).astype(str), return_inverse=True)
        ka, kb = region[enroll], region[test]
        if method == "oracle_quantile":
            maps, counts, fallback, w = _fit_quantile(
                s, y, ka, kb, region, utterance_speakers, prior_speakers, pairs=quantile_pairs
            )
            settings.update(prior_speakers=prior_speakers, weights=w.tolist())
            if quantile_pairs != "touching":
                settings.update(quantile_pairs=quantile_pairs)
        elif method == "oracle":
            settings.update(target_fmr=target_fmr)
            offsets, counts = _fsn_offsets(s, y, ka, kb, len(names), target_fmr, names)
            shifted = s - 0.5 * (offsets[ka] + offsets[kb])
            maps, fallback = offsets[:, None], fit_linear(shifted, y)
        else:
            maps, counts = _per_region_beta(s, y, ka, kb, len(names), "group", names)
            fallback = fit_beta(s, y)
        return Calibrator(
            method, centroids=empty, maps=maps, counts=counts, fallback=fallback,
            groups=tuple(names.tolist()), settings=settings, **common,
        )  # fmt: skip
    settings.update(clusters=clusters)
    centroids = kmeans_centroids(embeddings, clusters, seed)
    probe = Calibrator(method, centroids=centroids, maps=np.zeros((clusters, 3)),
                       counts=np.zeros(clusters), fallback=np.zeros(3), **common)  # fmt: skip
    region = probe.nearest(embeddings)[0][:, 0]
    if method == "quantile":
        maps, counts, fallback, w = _fit_quantile(
            s, y, region[enroll], region[test], region, utterance_speakers, prior_speakers,
            clusters, pairs=quantile_pairs,
        )  # fmt: skip
        settings.update(prior_speakers=prior_speakers, weights=w.tolist())
        if quantile_pairs != "touching":
            settings.update(quantile_pairs=quantile_pairs)
        return Calibrator(
            method, centroids=centroids, maps=maps, counts=counts, fallback=fallback,
            settings=settings, **common,
        )  # fmt: skip
    if method == "fsn":
        settings.update(target_fmr=target_fmr)
        offsets, counts = _fsn_offsets(s, y, region[enroll], region[test], clusters, target_fmr)
        if prior_speakers > 0:
            w = _shrink_weights(region, utterance_speakers, prior_speakers, clusters)
            offsets = offsets * w
            settings.update(prior_speakers=prior_speakers, weights=w.tolist())
        shifted = s - 0.5 * (offsets[region[enroll]] + offsets[region[test]])
        return Calibrator(
            method, centroids=centroids, maps=offsets[:, None], counts=counts,
            fallback=fit_linear(shifted, y), settings=settings, **common,
        )  # fmt: skip
    maps, counts = _per_region_beta(s, y, region[enroll], region[test], clusters, "cluster")
    if method == "softcal":
        settings.update(top=min(top, clusters), temperature=temperature)
    return Calibrator(
        method, centroids=centroids, maps=maps, counts=counts, fallback=fit_beta(s, y),
        settings=settings, **common,
    )  # fmt: skip


def check_softcal_settings(top: int, temperature: float, names=("top", "temperature")) -> None:
    """Refuse softcal settings that give one constant LLR (top < 1), flip the weights
    (temperature < 0), or overflow (0, NaN, infinite), before anything is fitted.

    Raises:
        CalibrationError: naming the setting (``names``: as the caller calls them).
    """
    if isinstance(top, bool) or not isinstance(top, int) or top < 1:
        raise CalibrationError(f"{names[0]}: at least 1 nearest centroid per side, got {top}")
    if not (isinstance(temperature, int | float) and 0 < temperature <= 1e6):
        raise CalibrationError(
            f"{names[1]}: the softmax temperature must be in (0, 1e6], got {temperature}"
        )


def _shrink_weights(region, utterance_speakers, prior_speakers, k) -> np.ndarray:
    """``n_c / (n_c + prior)`` per region, n_c its distinct speakers (1 with no prior)."""
    region = np.asarray(region)
    if prior_speakers <= 0:
        return (np.bincount(region, minlength=k)[:k] > 0).astype(np.float64)
    if utterance_speakers is None or len(utterance_speakers) != len(region):
        raise CalibrationError("shrinking regions by their speakers needs each utterance's speaker")
    _, spk = np.unique(np.asarray(utterance_speakers).astype(str), return_inverse=True)
    pairs = np.unique(np.stack([region, spk], axis=1), axis=0)  # (region, speaker) once
    n = np.bincount(pairs[:, 0], minlength=k)[:k].astype(np.float64)
    return n / (n + prior_speakers)


def _fit_quantile(s, y, ka, kb, region, utterance_speakers, prior_speakers, k=None,
                  pairs="touching"):  # fmt: skip
    """Quantile maps (C, 2 O), pair counts, the global linear map on the mapped scores, and
    the shrinkage weights. ``pairs``: see ``fit_calibrator``'s ``quantile_pairs``.
    """
    k = int(region.max()) + 1 if k is None else k
    if pairs == "within":
        fitting = [np.flatnonzero((ka == c) & (kb == c)) for c in range(k)]
    else:
        fitting = _touching(k, ka, kb)
    shrink = _shrink_weights(region, utterance_speakers, prior_speakers, k)
    knots, w = fit_quantile_maps(s, ~y, fitting, shrink)
    mapped = 0.5 * (apply_quantile_maps(knots, s, ka) + apply_quantile_maps(knots, s, kb))
    counts = np.array([p.size for p in fitting], dtype=np.float64)
    return knots.reshape(k, -1), counts, fit_linear(mapped, y), w


def _checked_cohort(cohort, shape: tuple[int, ...], top_n: int) -> np.ndarray:
    """The cohort as float32, after checking it fits the embeddings and ``top_n``."""
    cohort = np.asarray(cohort, dtype=np.float32)
    if cohort.ndim != 2 or len(shape) != 2 or cohort.shape[1] != shape[1]:
        raise CalibrationError(
            f"the AS-norm cohort has shape {cohort.shape}, the embeddings {tuple(shape)}: "
            "they must share the embedding dimension"
        )
    if top_n < 2 or cohort.shape[0] < 2:
        raise CalibrationError(
            f"AS-norm needs top_n >= 2 and a cohort of at least 2 embeddings "
            f"(top_n {top_n}, cohort {cohort.shape[0]})"
        )
    if not np.isfinite(cohort).all():
        raise CalibrationError("the AS-norm cohort has non-finite values")
    return cohort


def _per_region_beta(s, y, ka, kb, k, what, names=None) -> tuple[np.ndarray, np.ndarray]:
    maps, counts = np.zeros((k, 3)), np.zeros(k)
    for c, pairs in enumerate(_touching(k, ka, kb)):
        n_tar = int(y[pairs].sum())
        n_non = pairs.size - n_tar
        if n_tar < MIN_TARGETS or n_non < MIN_TARGETS:
            label = f"{what} {names[c] if names is not None else c}"
            raise CalibrationError(
                f"too few calibration pairs for {label}: {n_tar} same-speaker and {n_non} "
                f"different-speaker (at least {MIN_TARGETS} of each); use fewer clusters "
                "or more calibration speakers"
            )
        maps[c] = fit_beta(s[pairs], y[pairs])
        counts[c] = pairs.size
    return maps, counts


def _fsn_offsets(s, y, ka, kb, k, target_fmr, names=None) -> tuple[np.ndarray, np.ndarray]:
    nontarget = ~y
    need = math.ceil(MIN_FALSE_ACCEPTS / target_fmr)
    global_thr = np.quantile(s[nontarget], 1.0 - target_fmr)
    offsets, counts = np.zeros(k), np.zeros(k)
    for c, pairs in enumerate(_touching(k, ka, kb)):
        non = s[pairs][nontarget[pairs]]
        if non.size < need:
            label = f"group {names[c]}" if names is not None else f"cluster {c}"
            raise CalibrationError(
                f"too few calibration pairs for {label}: {non.size} different-speaker "
                f"pairs, FSN at FMR {target_fmr:g} needs {need}; use fewer clusters, a "
                "larger FMR or more calibration pairs"
            )
        offsets[c] = np.quantile(non, 1.0 - target_fmr) - global_thr
        counts[c] = pairs.size
    return offsets, counts
