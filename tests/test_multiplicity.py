"""BH q-values and Holm adjusted p-values against statsmodels' multipletests (the reference)."""

from __future__ import annotations

import numpy as np
import pytest
from statsmodels.stats.multitest import multipletests

from methods.monitoring.multiplicity import adjust, n_tested


@pytest.mark.parametrize("method,sm", [("bh", "fdr_bh"), ("holm", "holm")])
@pytest.mark.parametrize("seed", range(5))
def test_matches_statsmodels(method, sm, seed):
    rng = np.random.default_rng(seed)
    p = np.concatenate([rng.uniform(size=15), rng.uniform(0, 0.01, size=5)])
    ours = adjust(p, method)
    ref = multipletests(p, method=sm)[1]
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-12)


def test_missing_p_values_are_outside_the_family():
    p = [0.01, None, 0.04, float("nan"), 0.03]
    q = adjust(p, "bh")
    ref = multipletests([0.01, 0.04, 0.03], method="fdr_bh")[1]
    assert np.isnan(q[1]) and np.isnan(q[3])
    np.testing.assert_allclose(q[[0, 2, 4]], ref)
    assert n_tested(p) == 3


def test_controls_false_discoveries_over_many_null_families():
    rng = np.random.default_rng(0)
    fams = rng.uniform(size=(4000, 20))  # 20 null questions per run
    raw_any = (fams < 0.05).any(axis=1).mean()
    bh_any = np.array([(adjust(f, "bh") < 0.05).any() for f in fams[:1000]]).mean()
    assert raw_any > 0.5  # 1 - 0.95**20 = 0.64
    assert bh_any <= 0.07  # under the global null FDR = FWER = 5%


def test_unknown_method_is_refused():
    with pytest.raises(ValueError, match="bh, holm"):
        adjust([0.1], "bonferroni")
