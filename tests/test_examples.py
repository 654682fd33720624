"""Every example in examples/ runs end to end at tiny size (its SMOKE_ARGS) and returns sane numbers.

Each example has a check below: what must hold even at smoke size (probabilities in [0, 1], finite
losses, the invariants the example demonstrates, such as the SSM's recurrent mode agreeing with its
convolution mode, the probes agreeing with their dense baselines, or equal parameter counts).
"""

import importlib.util
import math
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SCRIPTS = sorted(p for p in EXAMPLES.glob("*.py") if not p.name.startswith("_"))


def load(path: Path):
    """Import an example by file name, as `python examples/<name>.py` would see its siblings."""
    if str(EXAMPLES) not in sys.path:
        sys.path.insert(0, str(EXAMPLES))  # so `from _common import ...` resolves
    spec = importlib.util.spec_from_file_location(f"examples_smoke_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def probability(value) -> bool:
    return isinstance(value, float) and 0.0 <= value <= 1.0


def finite(value) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def check_grokking(r):
    runs = {k: v for k, v in r.items() if k != "sweep_steps_to_test_100"}
    assert runs and all(probability(row["final_test_acc"]) and row["seconds"] > 0 for row in runs.values())
    for row in runs.values():
        assert row["steps_to_test_100"] is None or 0 <= row["steps_to_test_100"] < 20
    assert set(r["sweep_steps_to_test_100"]) == {"0.01", "0.03"}


def check_grokking_stablemax(r):
    assert len(r) == 2 and {name.split("/")[0] for name in r} == {"stablemax", "softmax"}
    for row in r.values():
        assert probability(row["final_test_acc"]) and row["final_test_acc"] <= row["max_test_acc"] <= 1.0
        assert row["seconds"] > 0 and finite(row["weight_norm_final"])
    softmax = next(row for name, row in r.items() if name.startswith("softmax"))
    assert probability(softmax["max_softmax_collapse"])


def check_hessian_spectrum(r):
    assert r["two_over_eta"] == 2 / r["learning_rate"]
    assert 0 < r["initial_sharpness"] <= r["max_sharpness"] and finite(r["final_loss"])
    assert r["history"]["loss"][-1] < r["history"]["loss"][0]  # GD at eta = 0.25 descends here
    assert len(r["batch_lambda_max"]) == 2 and r["full_lambda_max"] > 0
    # The rule scales the rate with the batch: never larger for a smaller batch.
    rates = [r["sgd_lr_by_batch"][b] for b in (4, 8, 16, 32)]
    assert all(a <= b + 1e-12 for a, b in zip(rates, rates[1:], strict=False))


def check_kan_fit(r):
    assert [row["grid_size"] for row in r["results"]] == [3]
    assert all(finite(row["test_rmse"]) and row["test_rmse"] > 0 for row in r["results"])


def check_kan_mnist(r):
    row = r["models"]["grkan"]
    assert row["params"] > 0 and probability(row["test_accuracy"]) and row["train_seconds"] > 0


def check_mnist_data_parallel(r):
    assert r["devices"] == jax.device_count() and probability(r["test_accuracy"])
    assert finite(r["final_train_loss"]) and r["steps"] == 12


def check_ntk_lazy_vs_rich(r):
    assert set(r) == {"width=8,alpha=1", "width=16,alpha=1"}
    assert all(v["kernel_distance"] >= 0 and finite(v["test_prediction_error"]) for v in r.values())


def check_sdm_selective(r):
    assert len(r["sdm"]) == len(r["softmax"]) == len(r["alphas"])
    for row in r["sdm"] + r["softmax"]:
        assert probability(row["coverage"]) and probability(row["min_class"])
    # Softmax thresholding admits fewer points as alpha rises.
    coverages = [row["coverage"] for row in r["softmax"]]
    assert all(a >= b for a, b in zip(coverages, coverages[1:], strict=False))


def check_ssm_listops(r):
    assert probability(r.pop("majority_class_accuracy"))
    assert set(r) == {"S4-PTD", "S5-PTD"}
    assert all(probability(v["test_accuracy"]) and finite(v["final_loss"]) for v in r.values())


def check_ssm_robustness(r):
    for row in r.values():
        assert all(probability(a) for a in row["accuracy"].values()) and finite(row["final_loss"])


def check_ssm_digits(r):
    # Logistic regression on 150 digits: measured 0.94 on these 50 test digits (a sanity floor).
    assert r["baseline_logistic_regression"] > 0.85
    row = r["permuted"]["S4-PTD"]
    assert probability(row["test_accuracy"]) and finite(row["final_loss"])
    # The recurrent mode computes the same function: measured max |difference| 3e-7 at this size.
    assert row["step_mode_agreement"] == 1.0 and row["step_mode_max_logit_diff"] < 1e-5


def check_sdm_digits(r):
    sdm, soft = r["sdm"], r["softmax_same_coverage"]
    assert r["alpha"] == 0.95 and probability(r["test_accuracy_no_rejection"])
    assert probability(sdm["coverage"]) and probability(sdm["unseen_admitted_share"])
    # Same coverage: the softmax threshold admits as many test images (more only on exact ties).
    assert soft["admitted"] >= sdm["admitted"] and (sdm["admitted"] > 0 or soft["admitted"] == 0)
    for row in (sdm, soft):
        assert (row["admitted_accuracy"] is None) == (row["admitted"] == 0)


def check_kan_digits(r):
    params = r["params"]
    assert set(params) == {"KAN", "KAT-MLP", "MLP"}
    # Widths move the MLP's count by 75 and the KAT-MLP's by 8 x ~75 (groups divide its width).
    assert abs(params["MLP"] - params["KAN"]) <= 75 / 2 + 1
    assert abs(params["KAT-MLP"] - params["KAN"]) <= 8 * 80 / 2
    trained = r["trained"]
    assert set(trained) == {"MLP"}  # the smoke run trains one model (each compiles for seconds)
    for name, row in trained.items():
        assert row["params"] == params[name]  # the trained model is the one counted from shapes
        assert probability(row["test_accuracy"]) and row["ms_per_step"] > 0


TOL_TRACE = 0.2


def check_probes_digits(r):
    final = r["final"]
    dense = final["hessian_top_dense"]
    # Lanczos (the factory's and the in-loop monitor's) against the dense Hessian's eigvalsh: measured
    # to agree to 1e-6 relative on the largest at this size.
    np.testing.assert_allclose(final["hessian_top_lanczos"][0], dense[0], rtol=1e-4)
    np.testing.assert_allclose(final["sharpness_monitor"], dense[0], rtol=1e-4)
    # empirical_ntk_fn and the monitor's NTK against J J^T from the full Jacobian: measured 1e-7 relative.
    np.testing.assert_allclose(final["ntk_top_probe"], final["ntk_top_dense"], rtol=1e-4)
    np.testing.assert_allclose(final["ntk_max_monitor"], final["ntk_top_dense"][0], rtol=1e-4)
    # Hutchinson with 50 Rademacher probes is stochastic: TOL_TRACE covers several standard errors.
    np.testing.assert_allclose(
        final["hessian_trace_hutchinson"], final["hessian_trace_dense"], rtol=TOL_TRACE
    )
    history = r["history"]
    assert history["ntk_distance"][0] == 0.0 and history["ntk_distance"][-1] > 0
    assert history["loss"][-1] < history["loss"][0]
    assert r["max_sharpness"] == max(history["sharpness"])


CHECKS = {name[len("check_") :]: fn for name, fn in globals().items() if name.startswith("check_")}


def test_examples_exist_and_each_has_a_check():
    assert SCRIPTS, f"no examples found in {EXAMPLES}"
    assert {p.stem for p in SCRIPTS} == set(CHECKS), "every example needs a check in this file"


@pytest.mark.slow
@pytest.mark.parametrize("script", SCRIPTS, ids=[p.stem for p in SCRIPTS])
def test_example_runs(script, tmp_path):
    module = load(script)
    assert isinstance(module.SMOKE_ARGS, list), f"{script.name} must define SMOKE_ARGS: list[str]"
    results = module.main(module.SMOKE_ARGS + ["--out", str(tmp_path)])
    assert isinstance(results, dict) and results, f"{script.name}: main() must return its headline numbers"
    assert any(tmp_path.glob("*.json")), f"{script.name} wrote no JSON to --out"
    CHECKS[script.stem](results)
