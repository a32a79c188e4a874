"""Metrics and baselines against hand-computed cases: FD closed forms, L2/Var/SI/PCC, lags, activity."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline.evaluation.baselines import delay_mirror, mirror, random_clips
from pipeline.evaluation.metrics import (
    ActivityDetector,
    activity_scores,
    calibrate_activity,
    center_sequences,
    cross_correlation,
    detect_activity,
    fd,
    fit_clusters,
    frechet_distance,
    l2_error,
    paired_fd,
    pcc,
    pooled_cross_correlation,
    split_windows,
    style_index,
    variation,
    velocity,
)
from schemas.conventions import HEAD_FPS


def rotation(theta: float, phi: float) -> np.ndarray:
    """A 3-D rotation (two Givens rotations) to make covariances non-diagonal."""
    c, s = math.cos(theta), math.sin(theta)
    r1 = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    c, s = math.cos(phi), math.sin(phi)
    r2 = np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])
    return r1 @ r2


def psd_sqrt(a: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh(a)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def random_walk(rng, n: int, t: int, c: int = 3) -> np.ndarray:
    return np.cumsum(rng.normal(size=(n, t, c)), axis=1)


# ------------------------------------------------------------------ windows, L2, variation


def test_split_windows_drops_remainder_and_keeps_order():
    x = np.arange(2 * 7 * 1, dtype=float).reshape(2, 7, 1)
    w = split_windows(x, 3)
    assert w.shape == (4, 3, 1)
    np.testing.assert_array_equal(w[:, :, 0], [[0, 1, 2], [3, 4, 5], [7, 8, 9], [10, 11, 12]])
    with pytest.raises(ValueError, match="shorter than the window"):
        split_windows(x, 8)
    with pytest.raises(ValueError, match=r"\[N, T, C\]"):
        split_windows(np.zeros((7, 3)), 3)


def test_l2_constant_offset_both_conventions():
    rng = np.random.default_rng(0)
    gt = rng.normal(size=(3, 250, 3))
    d = 1.5
    assert l2_error(gt + d, gt, convention="mse") == pytest.approx(d**2)
    assert l2_error(gt + d, gt, convention="euclidean") == pytest.approx(d * math.sqrt(3))
    assert l2_error(gt, gt) == 0.0


def test_l2_drops_window_remainder():
    gt = np.zeros((1, 130, 3))
    gen = np.zeros((1, 130, 3))
    gen[:, 125:] = 100.0  # only the dropped 5-frame remainder differs
    assert l2_error(gen, gt, window=125) == 0.0
    assert l2_error(gen, gt, window=10) > 0.0


def test_l2_rejects_bad_convention_and_shapes():
    x = np.zeros((1, 125, 3))
    with pytest.raises(ValueError, match="convention"):
        l2_error(x, x, convention="rmse")
    with pytest.raises(ValueError, match="same shape"):
        l2_error(x, np.zeros((1, 125, 2)))
    with pytest.raises(ValueError, match="shorter than the window"):
        l2_error(x[:, :100], x[:, :100])


def test_l2_mse_of_independent_sequences_is_sum_of_variances():
    """The docstring's claim behind Table I: Random's L2 ≈ Var(gen) + Var(GT)."""
    rng = np.random.default_rng(1)
    gen = rng.normal(0.0, math.sqrt(18.0), size=(200, 125, 3))
    gt = rng.normal(0.0, math.sqrt(16.0), size=(200, 125, 3))
    assert l2_error(gen, gt) == pytest.approx(variation(gen) + variation(gt), rel=0.02)


def test_variation_sine_and_constant():
    a = 4.0
    t = np.arange(250)
    sine = a * np.sin(2 * np.pi * t / 25)  # whole periods in every 125-frame window
    x = np.stack([sine, sine, sine], axis=-1)[None]
    assert variation(x) == pytest.approx(a**2 / 2, rel=1e-12)
    assert variation(np.full((2, 125, 3), 7.0)) == 0.0


def test_variation_pooled_counts_offsets_between_windows_per_window_does_not():
    t = np.arange(125)
    sine = 2.0 * np.sin(2 * np.pi * t / 25)  # variance 2 inside every window
    x = np.stack([sine + 0.0, sine + 6.0], axis=0)[:, :, None]  # two people 6 degrees apart
    assert variation(x, mode="per_window") == pytest.approx(2.0, rel=1e-12)
    assert variation(x, mode="pooled") == pytest.approx(2.0 + 9.0, rel=1e-12)  # + (6/2)^2 between windows
    centred = center_sequences(x)
    np.testing.assert_allclose(centred.mean(axis=1), 0.0, atol=1e-12)
    assert variation(centred, mode="pooled") == pytest.approx(2.0, rel=1e-12)
    np.testing.assert_array_equal(center_sequences(x, mode="raw"), x)
    with pytest.raises(ValueError, match="Var mode"):
        variation(x, mode="mean")


def test_table_one_arithmetic_needs_pooled_var_or_centring():
    """Independent draws from people with their own mean angle: MSE L2 = pooled Var(gen) + pooled Var(GT)
    (the between-person spread is in both), while per-window Var on raw angles misses the offsets; with
    centred angles per-window and pooled agree and L2 = their sum again."""
    rng = np.random.default_rng(3)
    n = 400
    gen = rng.normal(0.0, 2.0, (n, 125, 3)) + rng.normal(0.0, 3.0, (n, 1, 3))  # person offsets: SD 3
    gt = rng.normal(0.0, 2.0, (n, 125, 3)) + rng.normal(0.0, 3.0, (n, 1, 3))
    assert l2_error(gen, gt) == pytest.approx(variation(gen, mode="pooled") + variation(gt, mode="pooled"),
                                              rel=0.03)
    per_window_sum = variation(gen, mode="per_window") + variation(gt, mode="per_window")
    assert l2_error(gen, gt) > 1.5 * per_window_sum  # 4 + 9 + 4 + 9 vs 4 + 4
    g, r = center_sequences(gen), center_sequences(gt)
    assert l2_error(g, r) == pytest.approx(variation(g, mode="per_window") + variation(r, mode="per_window"),
                                           rel=0.03)


def test_convention_table_reports_every_variant():
    from pipeline.evaluation.config import EvalConfig
    from pipeline.evaluation.conventions import Evaluated, alternatives

    rng = np.random.default_rng(4)
    n, e = 40, 50
    gt = np.cumsum(rng.normal(0, 1.0, (n, e, 4)), axis=1) + rng.normal(0, 3.0, (n, 1, 4))
    rnd = np.cumsum(rng.normal(0, 1.0, (n, e, 4)), axis=1) + rng.normal(0, 3.0, (n, 1, 4))
    ev = Evaluated(["pitch", "yaw", "roll", "y"], gt, gt.copy(), {"Random": rnd, "Copy": gt.copy()})
    detectors = {ch: calibrate_activity([x[:, i] for x in gt], k_high=3.0, k_low=1.5)
                 for i, ch in ((0, "pitch"), (3, "y"))}
    alt = alternatives(ev, detectors, EvalConfig(eval_frames=e, long_window=e, short_window=25))
    row = alt["rows"]["Random"]
    for col in ("Var pooled, raw", "Var per-window, centred", "SI pooled, raw", "SI per-window, centred",
                "L2 raw", "L2 centred", "F1 (pitch)", "F1 (y)", "Act (y)"):
        assert col in row, col
    assert alt["rows"]["Copy"]["L2 raw"] == 0.0 and alt["rows"]["Copy"]["F1 (y)"] == 1.0
    ratios = alt["arithmetic"]["Random"]
    assert ratios["Var pooled, raw"] == pytest.approx(1.0, abs=0.3)  # independent draws
    assert ratios["Var per-window, raw"] > ratios["Var pooled, raw"]  # offsets missing from the denominator


# ------------------------------------------------------------------ Fréchet distance


def test_frechet_closed_form_commuting_covariances():
    r = rotation(0.4, -0.9)
    d1, d2 = np.array([4.0, 1.0, 0.25]), np.array([1.0, 9.0, 0.5])
    s1, s2 = r @ np.diag(d1) @ r.T, r @ np.diag(d2) @ r.T
    assert abs(s1[0, 1]) > 0.1  # genuinely non-diagonal
    mu1, mu2 = np.array([1.0, -2.0, 0.5]), np.array([0.0, 1.0, 0.5])
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(d1) - np.sqrt(d2)) ** 2)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-9)


def test_frechet_general_covariances_match_symmetric_form():
    """tr sqrtm(S1 S2) = tr sqrt(S1^½ S2 S1^½): an independent route for non-commuting covariances."""
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(3, 3)), rng.normal(size=(3, 3))
    s1, s2 = a @ a.T + 0.1 * np.eye(3), b @ b.T + 0.1 * np.eye(3)
    mu1, mu2 = rng.normal(size=3), rng.normal(size=3)
    h = psd_sqrt(s1)
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * psd_sqrt(h @ s2 @ h))
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-8)
    assert frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0.0, abs=1e-9)


def test_frechet_one_dimensional_and_singular():
    # 1-D: (mu1-mu2)^2 + (std1-std2)^2
    assert frechet_distance([1.0], [[4.0]], [3.0], [[1.0]]) == pytest.approx(4.0 + 1.0)
    # singular covariances: orthogonal rank-1 supports -> S1 S2 = 0
    value = frechet_distance(np.zeros(2), np.diag([1.0, 0.0]), np.zeros(2), np.diag([0.0, 1.0]))
    assert value == pytest.approx(2.0, abs=1e-4)
    # all-zero covariance on both sides
    assert frechet_distance(np.zeros(3), np.zeros((3, 3)), np.ones(3), np.zeros((3, 3))) == pytest.approx(3.0)
    with pytest.raises(ValueError, match="covariances"):
        frechet_distance(np.zeros(3), np.eye(2), np.zeros(3), np.eye(3))


def test_fd_identical_is_zero_both_modes():
    rng = np.random.default_rng(3)
    x = random_walk(rng, 4, 100)
    assert fd(x, x, mode="per_window") == pytest.approx(0.0, abs=1e-7)
    assert fd(x, x.copy(), mode="pooled") == pytest.approx(0.0, abs=1e-7)
    s = random_walk(rng, 4, 100)
    assert paired_fd(x, x, s) == pytest.approx(0.0, abs=1e-7)
    with pytest.raises(ValueError, match="FD mode"):
        fd(x, x, mode="mean")


def test_fd_pooled_samples_match_closed_form():
    rng = np.random.default_rng(4)
    r = rotation(0.7, 0.3)
    d1, d2 = np.array([9.0, 4.0, 1.0]), np.array([4.0, 4.0, 2.0])
    s1, s2 = r @ np.diag(d1) @ r.T, r @ np.diag(d2) @ r.T
    mu1, mu2 = np.array([0.0, 2.0, -1.0]), np.array([1.0, 0.0, -1.0])
    n, t = 40, 2500
    gen = rng.multivariate_normal(mu1, s1, size=n * t).reshape(n, t, 3)
    gt = rng.multivariate_normal(mu2, s2, size=n * t).reshape(n, t, 3)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(d1) - np.sqrt(d2)) ** 2)  # = 5 + 0.5147...
    assert fd(gen, gt, window=25, mode="pooled") == pytest.approx(expected, rel=0.03)


def test_fd_per_window_is_mean_of_window_fds():
    rng = np.random.default_rng(5)
    gen, gt = random_walk(rng, 2, 60), random_walk(rng, 2, 60)
    manual = []
    for i in range(2):
        for w in range(2):  # 2 windows of 25, 10 frames dropped
            a, b = gen[i, w * 25 : (w + 1) * 25], gt[i, w * 25 : (w + 1) * 25]
            manual.append(frechet_distance(a.mean(0), np.cov(a.T), b.mean(0), np.cov(b.T)))
    assert fd(gen, gt) == pytest.approx(np.mean(manual), rel=1e-12)


def test_fd_constant_windows_do_not_crash():
    still = np.zeros((2, 50, 3))
    moving = random_walk(np.random.default_rng(6), 2, 50)
    for mode in ("per_window", "pooled"):
        value = fd(still, moving, mode=mode)
        assert np.isfinite(value) and value > 0
        assert fd(still, still + 1.0, mode=mode) == pytest.approx(3.0)
        assert np.isfinite(paired_fd(still, moving, still, mode=mode))


def test_paired_fd_sees_speaker_coupling_that_fd_misses():
    """Same listener marginals, but only the GT listener follows the speaker: P-FD > 0, FD ≈ 0."""
    rng = np.random.default_rng(7)
    speaker = rng.normal(size=(20, 500, 3))
    gt = speaker + 0.1 * rng.normal(size=speaker.shape)
    gen = gt[::-1].copy()  # the same listener motions, paired with the wrong speaker
    assert fd(gen, gt, mode="pooled") == pytest.approx(0.0, abs=1e-9)
    assert paired_fd(gen, gt, speaker, mode="pooled") > 1.0
    with pytest.raises(ValueError, match="speaker"):
        paired_fd(gen, gt, speaker[:, :100])


# ------------------------------------------------------------------ style index


def test_style_index_uniform_single_and_bound():
    centers = np.array([[0.0, 0, 0], [10, 0, 0], [0, 10, 0], [0, 0, 10]])
    k = len(centers)
    uniform = np.tile(centers, (5, 1))[None]  # 20 frames, 5 of each cluster per 20-frame window
    assert style_index(uniform, centers, window=20) == pytest.approx(math.log2(k))
    assert style_index(uniform, centers, window=20, mode="pooled") == pytest.approx(math.log2(k))
    one = np.tile(centers[2] + 0.5, (40, 1))[None]
    assert style_index(one, centers, window=20) == 0.0
    assert style_index(one, centers, window=20, mode="pooled") == 0.0
    rng = np.random.default_rng(8)
    x = rng.normal(5.0, 6.0, size=(5, 100, 3))
    for mode in ("per_window", "pooled"):
        assert 0.0 < style_index(x, centers, mode=mode) <= math.log2(k) + 1e-12


def test_style_index_per_window_vs_pooled():
    """Two clusters, each window pure: per_window SI = 0 but pooled SI = 1 bit."""
    centers = np.array([[0.0, 0, 0], [10, 0, 0]])
    x = np.concatenate([np.tile(centers[0], (25, 1)), np.tile(centers[1], (25, 1))])[None]
    assert style_index(x, centers, mode="per_window") == 0.0
    assert style_index(x, centers, mode="pooled") == pytest.approx(1.0)
    with pytest.raises(ValueError, match="channels"):
        style_index(x, centers[:, :2])


def test_fit_clusters_deterministic_and_recovers_blobs():
    rng = np.random.default_rng(9)
    true = np.array([[0.0, 0, 0], [20, 0, 0], [0, 20, 0]])
    frames = true[rng.integers(3, size=3000)] + rng.normal(0, 0.5, size=(3000, 3))
    ref = frames.reshape(30, 100, 3)
    c1 = fit_clusters(ref, k=3, seed=0)
    np.testing.assert_array_equal(c1, fit_clusters(ref, k=3, seed=0))
    assert c1.shape == (3, 3)
    found = c1[np.argsort(c1[:, 0] * 10 + c1[:, 1])]
    np.testing.assert_allclose(found, true[np.argsort(true[:, 0] * 10 + true[:, 1])], atol=0.1)
    with pytest.raises(ValueError, match="at least k"):
        fit_clusters(ref[:1, :2], k=3)


# ------------------------------------------------------------------ velocity, PCC


def test_velocity_units_per_second():
    x = np.arange(5, dtype=float).reshape(1, 5, 1) * 2.0  # 2 degrees per frame
    v = velocity(x)
    assert v.shape == (1, 4, 1)
    np.testing.assert_allclose(v, 2.0 * HEAD_FPS)


@pytest.mark.parametrize("mode", ["per_sequence", "pooled"])
def test_pcc_self_negation_and_affine(mode):
    rng = np.random.default_rng(10)
    x = random_walk(rng, 4, 80)
    assert pcc(x, x, mode=mode) == pytest.approx(1.0)
    assert pcc(-x, x, mode=mode) == pytest.approx(-1.0)
    assert pcc(3.0 * x + 5.0, x, mode=mode) == pytest.approx(1.0)
    y = random_walk(rng, 4, 80)
    assert -1.0 <= pcc(x, y, mode=mode) <= 1.0


def test_pcc_skips_constant_sequences():
    rng = np.random.default_rng(11)
    gt = random_walk(rng, 2, 50)
    gen = gt.copy()
    gen[0, :, 0] = 3.0  # still channel: undefined r, skipped
    gen[1] = -gt[1]
    # remaining pairs: sample 0 channels 1, 2 (r = 1) and sample 1 (r = -1, three channels)
    assert pcc(gen, gt) == pytest.approx((2 * 1.0 + 3 * -1.0) / 5)
    ramp = np.linspace(0, 10, 50)[None, :, None] * np.ones((2, 1, 3))  # constant velocity
    assert np.isnan(pcc(ramp, gt))
    assert np.isnan(pcc(ramp, gt, mode="pooled"))
    assert np.isnan(pcc(np.zeros((2, 50, 3)), np.zeros((2, 50, 3))))


# ------------------------------------------------------------------ cross-correlation, Delay Mirror


def planted_pair(lag: int, rng, n: int = 6, t: int = 150, noise: float = 0.05):
    """Speaker random walk and a listener that repeats it `lag` frames later, plus noise."""
    full = random_walk(rng, n, t + lag)
    speaker = full[:, lag:]
    listener = full[:, :t] + noise * rng.normal(size=(n, t, 3))
    return speaker, listener


def test_cross_correlation_recovers_planted_lag():
    rng = np.random.default_rng(12)
    speaker, listener = planted_pair(7, rng)
    lags, curve = cross_correlation(speaker, listener, max_lag=20)
    assert lags.dtype.kind == "i"
    np.testing.assert_array_equal(lags, np.arange(-20, 21))
    assert curve.shape == (41,)
    assert curve[lags == 7][0] > 0.95
    assert np.max(np.abs(curve[lags != 7])) < 0.3
    # the listener leading the speaker shows up at the negative lag
    lags, curve = cross_correlation(listener, speaker, max_lag=20)
    assert lags[np.nanargmax(curve)] == -7


def test_pooled_cross_correlation_over_clips_of_different_lengths():
    rng = np.random.default_rng(5)
    speakers, listeners = [], []
    for length in (40, 75, 90, 137):
        s, li = planted_pair(9, rng, n=1, t=length)
        speakers.append(s[0])
        listeners.append(li[0])
    lags, curve = pooled_cross_correlation(speakers, listeners, max_lag=38)
    np.testing.assert_array_equal(lags, np.arange(-38, 39))
    assert lags[np.nanargmax(curve)] == 9 and curve[lags == 9][0] > 0.9
    # the 40-frame clip adds nothing beyond its length; a lag longer than every clip is undefined
    _, far = pooled_cross_correlation(speakers[:1], listeners[:1], max_lag=45)
    assert np.isnan(far[0]) and np.isnan(far[-1])
    with pytest.raises(ValueError, match="as many"):
        pooled_cross_correlation(speakers, listeners[:2], max_lag=5)


def test_cross_correlation_zero_lag_equals_pcc_and_validates():
    rng = np.random.default_rng(13)
    a, b = random_walk(rng, 3, 40), random_walk(rng, 3, 40)
    lags, curve = cross_correlation(a, b, max_lag=3)
    assert curve[lags == 0][0] == pytest.approx(pcc(a, b))
    with pytest.raises(ValueError, match="max_lag"):
        cross_correlation(a, b, max_lag=39)


def test_delay_mirror_reproduces_listener_with_estimated_lag():
    rng = np.random.default_rng(14)
    speaker, listener = planted_pair(7, rng, noise=0.0)
    lags, curve = cross_correlation(speaker, listener, max_lag=15)
    lag = int(lags[np.nanargmax(curve)])
    assert lag == 7
    seg_speaker, seg_listener = speaker[0], listener[0]
    out = delay_mirror(seg_speaker, start=12, length=125, lag=lag)
    assert out.shape == (125, 3)
    np.testing.assert_allclose(out, seg_listener[12:137])  # context frames cover the delay
    # from the segment start, the first `lag` frames hold speaker frame 0
    head = delay_mirror(seg_speaker, start=0, length=20, lag=lag)
    np.testing.assert_array_equal(head[:lag], np.repeat(seg_speaker[:1], lag, axis=0))
    np.testing.assert_allclose(head[lag:], seg_listener[lag:20])
    with pytest.raises(ValueError, match="speaker frame"):
        delay_mirror(seg_speaker, start=140, length=20, lag=0)


def test_mirror_returns_a_copy_of_the_speaker():
    s = np.random.default_rng(15).normal(size=(2, 30, 3))
    m = mirror(s)
    np.testing.assert_array_equal(m, s)
    m[0, 0, 0] += 1.0
    assert s[0, 0, 0] != m[0, 0, 0]


def test_random_clips_deterministic_shape_and_from_pool():
    rng = np.random.default_rng(16)
    pool = [rng.normal(size=(t, 3)) for t in (50, 140, 10, 200)]
    a = random_clips(pool, 12, 125, seed=3)
    assert a.shape == (12, 125, 3)
    np.testing.assert_array_equal(a, random_clips(pool, 12, 125, seed=3))
    assert not np.array_equal(a, random_clips(pool, 12, 125, seed=4))
    sources = set()
    for clip in a:  # each draw is a contiguous excerpt of an eligible pool clip (140 or 200 frames)
        hits = [
            (i, off)
            for i in (1, 3)
            for off in range(pool[i].shape[0] - 125 + 1)
            if np.array_equal(pool[i][off : off + 125], clip)
        ]
        assert len(hits) == 1
        sources.add(hits[0])
    assert {i for i, _ in sources} == {1, 3}  # both eligible clips get drawn
    assert len({off for _, off in sources}) > 2  # start offsets vary
    with pytest.raises(ValueError, match="length=300"):
        random_clips(pool, 2, 300)


# ------------------------------------------------------------------ activity detector


NOD_STARTS = (30, 90, 160, 210)
NOD_FRAMES = 10  # 0.8 s down-and-up
NOISE_DEG = 0.2


def nod_clip(rng, t: int = 250) -> tuple[np.ndarray, np.ndarray]:
    """Flat pitch with jitter plus 10° nods (raised cosine down and back up) at known frames."""
    x = rng.normal(0.0, NOISE_DEG, t)
    truth = np.zeros(t, dtype=bool)
    k = np.arange(NOD_FRAMES + 1)
    for s in NOD_STARTS:
        x[s : s + NOD_FRAMES + 1] += -10.0 * (1 - np.cos(2 * np.pi * k / NOD_FRAMES)) / 2
        truth[s : s + NOD_FRAMES + 1] = True
    return x, truth


def test_calibrate_activity_scales_with_noise():
    rng = np.random.default_rng(17)
    base = [rng.normal(0.0, 1.0, n) for n in (400, 300, 500, 1)]  # mixed lengths, a 1-frame clip skipped
    d1 = calibrate_activity([NOISE_DEG * b for b in base], k_high=6.0, k_low=3.0)
    d3 = calibrate_activity([3 * NOISE_DEG * b for b in base], k_high=6.0, k_low=3.0)
    assert d3.high == pytest.approx(3 * d1.high, rel=1e-9)
    assert d3.low == pytest.approx(3 * d1.low, rel=1e-9)
    assert d1.high == pytest.approx(2 * d1.low)
    # white noise s: gradient + 3-frame mean gives velocity std s * fps / 3
    assert d1.high / 6.0 == pytest.approx(NOISE_DEG * HEAD_FPS / 3, rel=0.08)
    assert calibrate_activity(base, min_frames=4).to_dict()["min_frames"] == 4
    with pytest.raises(ValueError, match="no clip"):
        calibrate_activity([])
    with pytest.raises(ValueError, match="scale is 0"):
        calibrate_activity([np.zeros(100)])


def test_detector_finds_planted_nods():
    rng = np.random.default_rng(18)
    det = calibrate_activity([rng.normal(0.0, NOISE_DEG, 500) for _ in range(8)], k_high=6.0, k_low=3.0)
    clips = [nod_clip(rng) for _ in range(5)]
    signals = np.stack([c[0] for c in clips])
    truth = np.stack([c[1] for c in clips])
    pred = detect_activity(signals, det)
    assert pred.dtype == bool and pred.shape == signals.shape
    np.testing.assert_array_equal(pred[2], detect_activity(signals[2], det))  # batch == per row
    far = np.ones(truth.shape[1], dtype=bool)
    for s in NOD_STARTS:
        far[max(0, s - 3) : s + NOD_FRAMES + 4] = False
        assert pred[:, s : s + NOD_FRAMES + 1].any(axis=1).all()  # every nod overlaps an active run
        # one run per nod: the bottom-of-nod zero crossing is bridged
        assert all(np.diff(row[s - 3 : s + NOD_FRAMES + 4].astype(int)).clip(0).sum() == 1 for row in pred)
    assert not pred[:, far].any()
    scores = activity_scores(pred, truth)
    assert scores["precision"] >= 0.8 and scores["recall"] >= 0.8
    assert scores["act"] == pytest.approx(pred.mean())


def angle_from_steps(steps) -> np.ndarray:
    """Angle whose per-step velocity is `steps` (deg/s); np.gradient then gives (steps[t-1] + steps[t]) / 2."""
    return np.concatenate([[0.0], np.cumsum(np.asarray(steps, dtype=float)) / HEAD_FPS])


def test_detector_hysteresis_bridge_and_min_frames():
    """Hand-computed masks, no smoothing: each rule of the detector in isolation."""
    det = ActivityDetector(high=10.0, low=5.0, smooth_frames=1, min_frames=2, bridge_frames=2)
    # hysteresis: v = 0 0 0 3 6 6 9 12 9 6 6 3 0 0 0 3 6 6 6 3 0 0 0 -> only frame 7 >= high; its >= low
    # run is frames 4..10; the later 6 deg/s plateau (16..18) never reaches high and stays inactive
    angle = angle_from_steps([0] * 3 + [6] * 3 + [12] * 2 + [6] * 3 + [0] * 4 + [6] * 4 + [0] * 3)
    expected = np.zeros(angle.shape[0], dtype=bool)
    expected[4:11] = True
    np.testing.assert_array_equal(detect_activity(angle, det), expected)
    np.testing.assert_array_equal(detect_activity(-angle, det), expected)  # a nod goes both ways
    # bridging: v = 0 0 6 12 12 6 0 0 6 12 12 6 0 0 -> runs 2..5 and 8..11, a 2-frame gap is filled
    two_gap = angle_from_steps([0, 0, 12, 12, 12, 0, 0, 0, 12, 12, 12, 0, 0])
    expected = np.zeros(two_gap.shape[0], dtype=bool)
    expected[2:12] = True
    np.testing.assert_array_equal(detect_activity(two_gap, det), expected)
    three_gap = angle_from_steps([0, 0, 12, 12, 12, 0, 0, 0, 0, 12, 12, 12, 0, 0])
    expected = np.zeros(three_gap.shape[0], dtype=bool)
    expected[2:6] = expected[9:13] = True
    np.testing.assert_array_equal(detect_activity(three_gap, det), expected)
    # min_frames: one 20 deg/s step gives v = 10 on exactly two frames (3, 4)
    blip = angle_from_steps([0, 0, 0, 20, 0, 0, 0])
    np.testing.assert_array_equal(np.flatnonzero(detect_activity(blip, det)), [3, 4])
    strict = ActivityDetector(high=10.0, low=5.0, smooth_frames=1, min_frames=3)
    assert not detect_activity(blip, strict).any()
    with pytest.raises(ValueError, match="low <= high"):
        ActivityDetector(high=1.0, low=2.0)
    with pytest.raises(ValueError, match="batch"):
        detect_activity(np.zeros((2, 2, 5)), det)


def test_activity_scores_hand_case_and_undefined():
    s = activity_scores([1, 1, 0, 0], [1, 0, 1, 0])
    assert s == {"f1": 0.5, "precision": 0.5, "recall": 0.5, "accuracy": 0.5, "act": 0.5}
    s = activity_scores([0, 0, 0, 0], [1, 0, 0, 0])
    assert s["precision"] == 0.0 and s["recall"] == 0.0 and s["f1"] == 0.0
    assert s["accuracy"] == 0.75 and s["act"] == 0.0
    s = activity_scores(np.array([[1, 1], [0, 1]], bool), np.array([[1, 1], [1, 1]], bool))
    assert s["precision"] == 1.0 and s["recall"] == pytest.approx(0.75)
    assert s["f1"] == pytest.approx(2 * 0.75 / 1.75)
    with pytest.raises(ValueError, match="same shape"):
        activity_scores([1, 0], [1, 0, 0])
    assert ActivityDetector(high=2.0, low=1.0).to_dict() == {
        "high": 2.0,
        "low": 1.0,
        "smooth_frames": 3,
        "min_frames": 2,
        "bridge_frames": 2,
    }
