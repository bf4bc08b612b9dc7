"""Config loading, overrides and validation messages."""

import json

import pytest
import yaml

from nnrun.config import ExperimentConfig, apply_override, load_config, validate_config
from nnrun.errors import UserInputError


def write(tmp_path, text: str):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def test_defaults_are_valid_and_round_trip_through_yaml(tmp_path):
    cfg = load_config(None)
    again = load_config(write(tmp_path, cfg.to_yaml()))
    assert again == cfg


def test_overrides_parse_values_as_yaml(tmp_path):
    path = write(tmp_path, "optim:\n  lr: 0.5\n")
    cfg = load_config(path, ["optim.lr=1e-3", "model.hidden=[32, 16]", "data.root=/x/y", "name=sweep-1"])
    assert cfg.optim.lr == pytest.approx(1e-3)
    assert cfg.model.hidden == [32, 16]
    assert cfg.data.root == "/x/y"
    assert cfg.name == "sweep-1"


def test_override_creates_missing_sections():
    raw: dict = {}
    apply_override(raw, "train.epochs=3")
    assert raw == {"train": {"epochs": 3}}


@pytest.mark.parametrize("item", ["optim.lr", "=3", "optim..lr=1", ".lr=2"])
def test_malformed_override_is_rejected(item):
    with pytest.raises(UserInputError, match="KEY=VALUE"):
        load_config(None, [item])


def test_override_into_a_scalar_is_rejected(tmp_path):
    with pytest.raises(UserInputError, match="seed is not a section"):
        load_config(write(tmp_path, "seed: 3\n"), ["seed.x=1"])
    with pytest.raises(UserInputError, match="seed: Input should be a valid integer"):
        load_config(None, ["seed.x=1"])


def test_unknown_key_names_the_dotted_path_and_allowed_keys(tmp_path):
    path = write(tmp_path, "optim:\n  learning_rate: 0.1\n")
    with pytest.raises(UserInputError) as e:
        load_config(path)
    message = str(e.value)
    assert "optim.learning_rate: unknown key" in message
    assert "lr" in message and "momentum" in message


def test_unknown_top_level_section(tmp_path):
    with pytest.raises(UserInputError, match="trian: unknown key.*train"):
        load_config(write(tmp_path, "trian:\n  epochs: 1\n"))


def test_wrong_type_names_key_and_value(tmp_path):
    with pytest.raises(UserInputError, match=r"train.epochs: .*integer.*'many'"):
        load_config(write(tmp_path, "train:\n  epochs: many\n"))


def test_unknown_scheme_lists_valid_names():
    with pytest.raises(UserInputError, match=r"model.init: .*'he'.*got 'lecun'"):
        load_config(None, ["model.init=lecun"])


def test_out_of_range_value():
    with pytest.raises(UserInputError, match=r"optim.lr: .*greater than 0"):
        load_config(None, ["optim.lr=-1"])


def test_missing_file(tmp_path):
    with pytest.raises(UserInputError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_malformed_yaml_names_line(tmp_path):
    with pytest.raises(UserInputError, match="not valid YAML at line 3"):
        load_config(write(tmp_path, "optim:\n  lr: 0.1\n  bad: : :\n"))


def test_non_mapping_yaml(tmp_path):
    with pytest.raises(UserInputError, match="must hold a mapping"):
        load_config(write(tmp_path, "- a\n- b\n"))


def test_schema_has_descriptions_and_enums():
    schema = ExperimentConfig.model_json_schema()
    text = json.dumps(schema)
    assert "Learning rate." in text
    model = schema["$defs"]["ModelConfig"]["properties"]
    assert "he" in json.dumps(model["init"])


def test_example_configs_validate():
    from pathlib import Path

    configs = sorted(Path("configs").glob("*.yaml"))
    assert configs
    for path in configs:
        load_config(path)


@pytest.mark.parametrize("item, expected", [
    ("model.hidden=[0]", "model.hidden.0: Input should be greater than or equal to 1"),
    ("model.bias_init=.nan", "model.bias_init: Input should be a finite number"),
    ("optim.lr=.inf", "optim.lr: Input should be a finite number"),
    ("name=a/../../escaped", "name: String should match pattern"),
    ("name=..", "name: String should match pattern"),
])
def test_values_that_would_crash_later_are_rejected_up_front(item, expected):
    with pytest.raises(UserInputError, match=expected):
        load_config(None, [item])


def test_config_file_that_is_not_utf8(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_bytes(b"\xff\xfe\x00name: x\n")
    with pytest.raises(UserInputError, match="cannot read config file"):
        load_config(path)


@pytest.mark.parametrize("raw, suggestion", [
    ({"model": {"init": "kaiming"}}, "model.init: Input should be"),
    ({"model": {"init": "kaiming"}}, "did you mean 'he'?"),
    ({"model": {"init": "glorot"}}, "did you mean 'xavier'?"),
    ({"model": {"activation": "Relu"}}, "did you mean 'relu'?"),
    ({"loss": {"name": "hinge"}}, "did you mean 'svm'?"),
    ({"optim": {"name": "adamm"}}, "did you mean 'adam' or 'adamw'?"),
    ({"preprocess": {"center": "per_feat"}}, "did you mean 'per_feature'?"),
    ({"optim": {"lrr": 0.1}}, "optim.lrr: unknown key; allowed keys here: name, lr"),
    ({"optim": {"lrr": 0.1}}, "did you mean 'optim.lr'?"),
    ({"model": {"hiden": [8]}}, "did you mean 'model.hidden'?"),
    ({"model": {"l2": 0.1}}, "'regularization.l2'"),
    ({"optimm": {"lr": 0.1}}, "did you mean 'optim'?"),
    ({"model": {"layers": {0: {"l22": 1.0}}}}, "did you mean 'model.layers.0.l2'?"),
])
def test_misspelled_keys_and_names_get_a_suggestion(raw, suggestion):
    with pytest.raises(UserInputError) as info:
        validate_config(raw)
    assert suggestion in str(info.value)


def test_no_suggestion_when_nothing_is_close():
    with pytest.raises(UserInputError) as info:
        validate_config({"model": {"init": "qqqq"}})
    assert "did you mean" not in str(info.value)


def test_a_registered_alias_is_suggested(monkeypatch):
    from dataclasses import replace

    from nnrun.nn.init import INIT_SCHEMES

    monkeypatch.setitem(INIT_SCHEMES, "mine", replace(INIT_SCHEMES["he"], aliases=("favourite",)))
    with pytest.raises(UserInputError, match="did you mean 'mine'"):
        validate_config({"model": {"init": "favourite"}})


def test_inactive_keys_name_what_has_no_effect_and_why():
    from nnrun.experiment import inactive_keys

    cifar = inactive_keys(validate_config({"data": {"dataset": "cifar10"}}))
    assert "data.test_size" in cifar and "cifar10" in cifar["data.test_size"]
    assert "data.val_size" not in cifar and "data.root" not in cifar
    momentum = inactive_keys(validate_config({"optim": {"name": "momentum"}}))
    assert {"optim.beta1", "optim.beta2", "optim.eps", "optim.decay_rate"} <= set(momentum)
    assert "optim.momentum" not in momentum and "optim.lr" not in momentum
    adam = inactive_keys(validate_config({"optim": {"name": "adam", "schedule": "step"}}))
    assert "optim.momentum" in adam and "optim.beta1" not in adam
    assert "optim.step_epochs" not in adam and "optim.min_lr" in adam
    defaults = inactive_keys(validate_config({}))
    assert {"model.bn_momentum", "model.bn_eps", "model.dropout_mode", "preprocess.eps", "model.init_scale",
            "model.leaky_slope", "loss.margin", "data.root"} <= set(defaults)
    on = inactive_keys(validate_config({"model": {"batchnorm": True, "dropout": 0.5, "init": "sparse",
                                                  "activation": "leaky_relu"},
                                        "preprocess": {"whiten": True}, "loss": {"name": "svm"}}))
    assert not {"model.bn_momentum", "model.dropout_mode", "preprocess.eps", "model.init_scale", "model.sparse_k",
                "model.leaky_slope", "loss.margin"} & set(on)
    per_layer = inactive_keys(validate_config({"model": {"hidden": [8], "layers": {0: {"init": "small"}}}}))
    assert "model.init_scale" not in per_layer and "model.sparse_k" in per_layer


def test_validate_marks_keys_without_effect_and_stays_valid_yaml():
    from typer.testing import CliRunner

    from nnrun.cli import app

    result = CliRunner().invoke(app, ["validate", "configs/quickstart.yaml", "--set", "data.dataset=cifar10"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert any(line.startswith("  test_size:") and "# no effect: data.dataset cifar10" in line for line in lines)
    assert any(line.startswith("  beta1:") and "# no effect: optim.name is momentum" in line for line in lines)
    assert not any(line.startswith("  lr:") and "#" in line for line in lines)
    assert yaml.safe_load(result.stdout) == load_config("configs/quickstart.yaml",
                                                        ["data.dataset=cifar10"]).model_dump(mode="json")


def test_a_yaml_file_of_too_many_values_stops_while_parsing(monkeypatch):
    """A 1 MiB list of half a million values is refused when parsing reaches the node limit, not after the whole
    document was built (which took 20 s and 400 MiB): composition raises at MAX_NODES + 1 nodes."""
    from nnrun import safeyaml

    composed = []
    original = safeyaml.BoundedLoader.compose_node

    def counting(self, parent, index):
        composed.append(1)
        return original(self, parent, index)

    monkeypatch.setattr(safeyaml.BoundedLoader, "compose_node", counting)
    text = "seed: 0\nname: [" + ",".join(["1"] * 500_000) + "]\n"
    with pytest.raises(safeyaml.YamlLimitError, match=f"holds more than {safeyaml.MAX_NODES} values"):
        safeyaml.safe_load(text)
    assert len(composed) == safeyaml.MAX_NODES + 1
