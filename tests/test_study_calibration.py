"""The study planner's calibration epoch builds its network through `nnrun.experiment.assemble`, as every run's
is built: the config's init, BatchNorm and dropout, not a network of its own."""

import numpy as np

import nnrun.experiment
from nnrun.config import validate_config
from nnrun.experiment import build_model
from nnrun.nn.layers import BatchNorm, Dropout
from nnrun.rng import stream
from nnrun.study import plan


def test_the_calibration_epoch_trains_what_assemble_builds_from_its_config(monkeypatch):
    built = []
    real = nnrun.experiment.assemble

    def spy(cfg, *args, **kwargs):
        built.append(real(cfg, *args, **kwargs))
        return built[-1]

    fitted = []
    monkeypatch.setattr(nnrun.experiment, "assemble", spy)
    monkeypatch.setattr("nnrun.trainer.fit", lambda model, loss, data, setup, *rest: fitted.append(model))
    seconds = plan._time_epoch([16, 8, 3], 16, 64, np.random.default_rng(0))
    assert seconds >= 0 and len(built) == 1 and fitted == [built[0].model]
    experiment = built[0]
    assert experiment.cfg.model.hidden == [8] and experiment.cfg.model.init == "small"
    assert experiment.data.name == "calibration" and experiment.data.n_features == 16
    assert experiment.setup.settings.batch_size == 16 and experiment.setup.settings.epochs == 1
    expected = build_model(experiment.cfg.model, 16, 3, stream(experiment.cfg.seed, "init"))
    for name, value in expected.state_dict().items():
        np.testing.assert_array_equal(experiment.model.state_dict()[name], value)


def test_the_calibration_config_is_a_run_config_whose_model_section_decides_the_layers():
    config = plan.calibration_config([16, 8, 3], 16)
    config["model"].update({"batchnorm": True, "dropout": 0.5})
    rng = np.random.default_rng(0)
    X = rng.standard_normal((32, 16), dtype=np.float32)
    y = rng.integers(0, 3, 32)
    from nnrun.datasets import Dataset

    data = Dataset("calibration", X, y, X[:8], y[:8], X[:1], y[:1], ["0", "1", "2"], None)
    experiment = nnrun.experiment.assemble(validate_config(config), data=data)
    kinds = {type(layer) for layer in experiment.model.layers}
    assert {BatchNorm, Dropout} <= kinds
