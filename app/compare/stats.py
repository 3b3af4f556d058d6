"""Statistics over seeds: a mean with its 95% confidence interval (Student's t), and whether two groups
of runs differ by more than noise (Welch's t-test, or a paired t-test when the groups were trained on the
same seeds and evaluated on the same rows).

The t distribution comes from scipy.special (stdtr / stdtrit), imported after the server has started
(app/main.py starts preload in a background thread) or on first use: the server starts without it, and
scipy.special loads in a fraction of scipy.stats' time.
"""
import math
from collections.abc import Sequence
from dataclasses import dataclass

LEVEL = 0.95  # every interval here is a 95% one


def _special():
    from scipy import special  # lazy: the server starts without it (see preload)

    return special


def preload() -> None:
    """Import scipy.special now (the server does it in a background thread once it is up), so the first
    comparison after a restart does not wait for the import."""
    _special()


def t_quantile(p: float, df: float) -> float:
    """The p-quantile of Student's t with df degrees of freedom (df may be fractional: Welch's)."""
    return float(_special().stdtrit(df, p))


def two_sided_p(t: float, df: float) -> float:
    """P(|T| ≥ |t|) for T ~ Student's t with df degrees of freedom."""
    if math.isinf(t):
        return 0.0
    return float(min(1.0, 2.0 * _special().stdtr(df, -abs(t))))


def _mean_var(values: Sequence[float]) -> tuple[float, float]:
    n = len(values)
    mean = math.fsum(values) / n
    var = math.fsum((v - mean) ** 2 for v in values) / (n - 1) if n > 1 else 0.0
    return mean, var


def mean_interval(values: Sequence[float]) -> dict:
    """{mean, ci_low, ci_high, n, std, min, max}: the mean of the values with its 95% interval
    mean ± t(0.975, n−1)·s/√n. One value has no spread to measure: its interval is null."""
    values = [float(v) for v in values]
    n = len(values)
    if n == 0:
        return {"mean": None, "ci_low": None, "ci_high": None, "n": 0, "std": None, "min": None, "max": None}
    mean, var = _mean_var(values)
    out = {"mean": mean, "ci_low": None, "ci_high": None, "n": n, "std": None, "min": min(values), "max": max(values)}
    if n > 1:
        std = math.sqrt(var)
        half = t_quantile(0.5 + LEVEL / 2, n - 1) * std / math.sqrt(n)
        out.update(ci_low=mean - half, ci_high=mean + half, std=std)
    return out


@dataclass
class Difference:
    """mean(a) − mean(b), its 95% interval and the two-sided p-value of "no difference"."""

    diff: float
    ci_low: float
    ci_high: float
    p_value: float
    df: float
    test: str  # "welch" or "paired"
    n_a: int
    n_b: int


def _difference(diff: float, se: float, df: float, test: str, n_a: int, n_b: int) -> Difference:
    if se == 0.0:  # every seed gave the same number on both sides: the difference is exact
        return Difference(diff, diff, diff, 1.0 if diff == 0 else 0.0, df, test, n_a, n_b)
    half = t_quantile(0.5 + LEVEL / 2, df) * se
    return Difference(diff, diff - half, diff + half, two_sided_p(diff / se, df), df, test, n_a, n_b)


def welch(a: Sequence[float], b: Sequence[float]) -> Difference:
    """Welch's unequal-variances t-test (scipy.stats.ttest_ind(a, b, equal_var=False)), with the
    Welch–Satterthwaite degrees of freedom for the interval too. Needs two values on each side."""
    if len(a) < 2 or len(b) < 2:
        raise ValueError("Welch's t-test needs at least two values in each group")
    mean_a, var_a = _mean_var(a)
    mean_b, var_b = _mean_var(b)
    ua, ub = var_a / len(a), var_b / len(b)
    se2 = ua + ub
    df = se2 ** 2 / (ua ** 2 / (len(a) - 1) + ub ** 2 / (len(b) - 1)) if se2 > 0 else len(a) + len(b) - 2
    return _difference(mean_a - mean_b, math.sqrt(se2), df, "welch", len(a), len(b))


def paired(a: Sequence[float], b: Sequence[float]) -> Difference:
    """The paired t-test (scipy.stats.ttest_rel): a[i] and b[i] share seed i and eval rows, so what
    the seed does to both cancels in a[i] − b[i]."""
    if len(a) != len(b) or len(a) < 2:
        raise ValueError("a paired t-test needs at least two pairs")
    mean, var = _mean_var([x - y for x, y in zip(a, b)])
    return _difference(mean, math.sqrt(var / len(a)), len(a) - 1, "paired", len(a), len(b))
