"""The grokking paper's headline claim, reproduced by examples/grokking.py at the paper's setting.

Prieto et al. 2025, Fig. 1a: on (a + b) mod 113 with 40% of the pairs, ⊥AdamW (lr 1e-2)
reaches 100% test accuracy within a few hundred full-batch steps (independent re-runs: step
~125), while AdamW with softmax cross-entropy fits the training set and stays near 0% test.
The in-loop monitor runs in both: once the baseline has memorised, its gradient is dominated by
naive loss minimisation (cos(-g, θ) high, Prieto et al. Fig. 5), and Adam at lr 1e-2 keeps the
sharpness of the loss far below the GD edge of stability 2/η.
"""

import pytest

from tests.test_examples import EXAMPLES, load


@pytest.mark.slow
@pytest.mark.xla_optimized  # 250 full-batch steps of two models: execution-bound
def test_perp_adamw_generalises_where_adamw_memorises(tmp_path):
    grokking = load(EXAMPLES / "grokking.py")
    summary = grokking.main(["--steps", "250", "--runs", "baseline,perp", "--out", str(tmp_path)])
    baseline, perp = summary["AdamW, softmax CE (baseline)"], summary["⊥AdamW, softmax CE"]
    assert baseline["steps_to_train_100"] is not None and baseline["steps_to_train_100"] < 100
    assert baseline["final_test_acc"] < 0.05
    assert perp["steps_to_test_100"] is not None and perp["steps_to_test_100"] <= 250
    assert baseline["final_nlm_alignment"] > 0.5
    for run in (baseline, perp):
        assert 0 < run["max_sharpness"] < run["two_over_lr"]
