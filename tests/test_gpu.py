"""The GPU path on a real NVIDIA GPU (skipped without CuPy and a GPU): tests/test_backend.py's GPU tests, run
with the real CuPy instead of the fake, plus what only a GPU can show (its own kernels compiled and run, its
float32 arithmetic against the CPU's, determinism of its reductions).

Run them where there is a GPU: `pytest tests/test_gpu.py` (bench/gpu_check.sh runs them with the GPU benchmark).
"""

import pytest

cupy = pytest.importorskip("cupy", reason="CuPy is not installed (pip install 'nnrun[gpu]')")

from tests.test_backend import (  # noqa: E402 - after the skip: these run here with the real CuPy
    test_a_captured_gpu_run_gives_the_bytes_of_the_uncaptured_run,
    test_a_cpu_run_resumes_on_the_gpu,
    test_a_diverging_gpu_run_names_the_batch_and_keeps_its_last_good_epoch,
    test_a_gpu_run_is_deterministic_and_resumes_exactly,
    test_a_gpu_run_matches_the_cpu_run,
    test_a_step_that_needs_the_host_runs_uncaptured_with_the_same_results,
    test_counter_based_dropout_masks,
    test_evaluate_and_predict_read_a_gpu_run_like_any_other,
    test_fused_batchnorm_matches_the_cpu_layer,
    test_fused_relu_dropout_and_softmax_kernels,
    test_fused_update_kernels_compute_each_rule,
    test_gradcheck_on_the_gpu_in_float64,
    test_preprocessing_fitted_on_the_gpu_matches_the_cpu_fit,
    test_the_gpu_augmentation_kernel_moves_images_as_the_cpu_augmentation,
    test_update_kernels_reading_a_step_table_match_the_cpu_rules,
)

__all__ = [
    "test_a_captured_gpu_run_gives_the_bytes_of_the_uncaptured_run",
    "test_a_cpu_run_resumes_on_the_gpu",
    "test_a_step_that_needs_the_host_runs_uncaptured_with_the_same_results",
    "test_counter_based_dropout_masks",
    "test_fused_batchnorm_matches_the_cpu_layer",
    "test_the_gpu_augmentation_kernel_moves_images_as_the_cpu_augmentation",
    "test_update_kernels_reading_a_step_table_match_the_cpu_rules",
    "test_a_diverging_gpu_run_names_the_batch_and_keeps_its_last_good_epoch",
    "test_a_gpu_run_is_deterministic_and_resumes_exactly",
    "test_a_gpu_run_matches_the_cpu_run",
    "test_evaluate_and_predict_read_a_gpu_run_like_any_other",
    "test_fused_relu_dropout_and_softmax_kernels",
    "test_fused_update_kernels_compute_each_rule",
    "test_gradcheck_on_the_gpu_in_float64",
    "test_preprocessing_fitted_on_the_gpu_matches_the_cpu_fit",
]


@pytest.fixture
def gpu():
    """The real CuPy, when it sees a GPU."""
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as e:  # CuPy's CUDA errors when there is no driver
        pytest.skip(f"CuPy sees no GPU ({e})")
    if count < 1:
        pytest.skip("CuPy sees no GPU")
    return cupy


@pytest.fixture
def run_rtol():
    """A real GPU sums matrix products and reductions in other orders than the CPU: float32 rounding that
    grows over a few epochs of training."""
    return 2e-3


def test_one_training_step_matches_the_cpu_within_float32_rounding(gpu):
    import numpy as np

    from nnrun.nn.layers import ACTIVATIONS
    from nnrun.nn.losses import SoftmaxCrossEntropy
    from nnrun.nn.model import build_mlp
    from nnrun.optim import Momentum

    rng = np.random.default_rng(0)
    sizes = [(3072, 512), (512, 512), (512, 10)]
    weights = [(rng.standard_normal(s, dtype=np.float32) * np.float32(np.sqrt(2 / s[0])),
                np.zeros(s[1], np.float32)) for s in sizes]
    X = rng.standard_normal((256, 3072), dtype=np.float32)
    y = rng.integers(0, 10, 256)
    models = {}
    for device in ("cpu", "gpu"):
        model = build_mlp([(W.copy(), b.copy()) for W, b in weights], activation=ACTIVATIONS["relu"],
                          batchnorm=True)
        xp = np if device == "cpu" else gpu
        if device == "gpu":
            model.to(gpu)
        scores = model.forward(xp.asarray(X), train=True)
        loss, dscores = SoftmaxCrossEntropy().loss_and_grad(scores, xp.asarray(y))
        model.backward(dscores)
        Momentum().step(model.params, 0.01)
        models[device] = (float(loss), model.snapshot())
    assert models["gpu"][0] == pytest.approx(models["cpu"][0], rel=1e-5)
    for name, value in models["cpu"][1].items():
        np.testing.assert_allclose(models["gpu"][1][name], value, rtol=1e-4, atol=1e-6, err_msg=name)
