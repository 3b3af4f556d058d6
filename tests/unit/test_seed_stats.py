"""The statistics over seeds (app/compare/stats.py) against scipy.stats and against values by hand."""
import math

import pytest
from scipy import stats as scipy_stats

from app.compare import stats

SAMPLES = [
    ([0.81, 0.84, 0.79, 0.86, 0.83], [0.78, 0.80, 0.77, 0.81, 0.76]),
    ([1.0, 2.0, 3.0], [2.0, 4.0, 6.0, 8.0, 10.0, 12.0]),  # unequal sizes and variances: df is fractional
    ([0.5, 0.52], [0.49, 0.55, 0.51, 0.50]),
]


def test_t_quantiles_match_the_tables():
    assert stats.t_quantile(0.975, 4) == pytest.approx(2.776445, abs=1e-6)  # the classic table value
    assert stats.t_quantile(0.975, 1) == pytest.approx(12.7062, abs=1e-4)
    assert stats.t_quantile(0.975, 7.3) == pytest.approx(scipy_stats.t.ppf(0.975, 7.3), rel=1e-10)


def test_mean_interval_by_hand_and_against_scipy():
    values = [2.0, 4.0, 6.0]  # mean 4, s = 2, t(0.975, 2) = 4.302653
    out = stats.mean_interval(values)
    half = 4.302653 * 2 / math.sqrt(3)
    assert out["mean"] == 4.0 and out["n"] == 3 and out["std"] == pytest.approx(2.0)
    assert (out["ci_low"], out["ci_high"]) == (pytest.approx(4 - half, abs=1e-5), pytest.approx(4 + half, abs=1e-5))
    assert (out["min"], out["max"]) == (2.0, 6.0)
    lo, hi = scipy_stats.t.interval(0.95, 2, loc=4.0, scale=scipy_stats.sem(values))
    assert (out["ci_low"], out["ci_high"]) == (pytest.approx(lo, rel=1e-10), pytest.approx(hi, rel=1e-10))


def test_one_seed_has_no_interval_and_none_has_no_mean():
    assert stats.mean_interval([0.7]) == {"mean": 0.7, "ci_low": None, "ci_high": None, "n": 1, "std": None,
                                          "min": 0.7, "max": 0.7}
    assert stats.mean_interval([])["mean"] is None


@pytest.mark.parametrize(("a", "b"), SAMPLES)
def test_welch_matches_scipy(a, b):
    ours = stats.welch(a, b)
    theirs = scipy_stats.ttest_ind(a, b, equal_var=False)
    assert ours.test == "welch" and (ours.n_a, ours.n_b) == (len(a), len(b))
    assert ours.diff == pytest.approx(sum(a) / len(a) - sum(b) / len(b))
    assert ours.p_value == pytest.approx(theirs.pvalue, rel=1e-9)
    assert ours.df == pytest.approx(theirs.df, rel=1e-9)
    lo, hi = theirs.confidence_interval(0.95)
    assert (ours.ci_low, ours.ci_high) == (pytest.approx(lo, rel=1e-9), pytest.approx(hi, rel=1e-9))


@pytest.mark.parametrize(("a", "b"), [SAMPLES[0], ([3.1, 2.9, 3.4, 3.0], [2.8, 2.9, 3.0, 2.7])])
def test_paired_matches_scipy(a, b):
    ours = stats.paired(a, b)
    theirs = scipy_stats.ttest_rel(a, b)
    assert ours.test == "paired" and ours.df == len(a) - 1
    assert ours.p_value == pytest.approx(theirs.pvalue, rel=1e-9)
    lo, hi = theirs.confidence_interval(0.95)
    assert (ours.ci_low, ours.ci_high) == (pytest.approx(lo, rel=1e-9), pytest.approx(hi, rel=1e-9))


def test_pairing_removes_what_the_seed_does_to_both():
    # Seeds move both methods together; b is always 0.01 behind a (plus a little noise).
    a = [0.70, 0.80, 0.75, 0.85, 0.72]
    b = [x - 0.01 + e for x, e in zip(a, [0.001, -0.001, 0.0005, -0.0005, 0.0])]
    assert stats.welch(a, b).p_value > 0.5  # across seeds, the seed's spread drowns the difference
    assert stats.paired(a, b).p_value < 0.001  # seed by seed, it is plain


def test_identical_seeds_give_an_exact_difference():
    d = stats.welch([0.5, 0.5], [0.4, 0.4])
    assert (d.diff, d.ci_low, d.ci_high, d.p_value) == (pytest.approx(0.1), pytest.approx(0.1), pytest.approx(0.1), 0.0)
    assert stats.welch([0.5, 0.5], [0.5, 0.5]).p_value == 1.0


def test_too_few_seeds_are_refused():
    with pytest.raises(ValueError):
        stats.welch([0.5], [0.4, 0.3])
    with pytest.raises(ValueError):
        stats.paired([0.5, 0.6], [0.4])
