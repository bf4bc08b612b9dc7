"""Composed configs (`defaults:`, nnrun.compose): how files merge, where every error says it came from, what a
run directory records, sweeps hashing composed configs by their content, and configs/ resolving exactly as
it did before it was refactored into small files over shared bases."""

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest
import yaml

from nnrun import compose
from nnrun.config import ExperimentConfig, compose_config, load_config, validate_config
from nnrun.errors import UserInputError
from tests import hostile_cases
from tests.helpers import invoke, invoke_error

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
BEFORE = Path(__file__).parent / "data" / "configs_before_compose.json"
"""Every configs/*.yaml as its YAML mapping before the refactor into bases (read from the commit before it).
A config whose meaning changes on purpose takes its new mapping here (`validate_config(raw)` must equal it)."""


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def flat(text: str) -> str:
    """A message with its line breaks and indentation folded (the terminal may wrap it)."""
    return " ".join(text.split())


@pytest.fixture
def here(tmp_path, monkeypatch):
    """The test's folder as the working directory, so messages show the paths as typed."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


# ---- merging ----------------------------------------------------------------------------------------------

def test_bases_merge_in_order_mappings_deep_lists_replaced_the_including_file_and_set_last(here):
    write(here / "base/a.yaml", "seed: 1\nmodel: {hidden: [64, 64], activation: tanh, init: xavier}\n"
                                "optim: {lr: 0.5, momentum: 0.8}\ndata: {train_size: 100}\n")
    write(here / "base/b.yaml", "model: {hidden: [8], init: he}\noptim: {lr: 0.2}\n")
    write(here / "top.yaml", "defaults: [base/a.yaml, base/b.yaml]\noptim: {lr: 0.1}\ndata: {train_size: null}\n")
    cfg = load_config("top.yaml")
    assert cfg.model.hidden == [8]  # b's list replaces a's whole, never [64, 64, 8]
    assert cfg.model.init == "he" and cfg.model.activation == "tanh"  # b over a, key by key inside model
    assert cfg.optim.lr == 0.1 and cfg.optim.momentum == 0.8  # the including file over both
    assert cfg.seed == 1 and cfg.data.train_size is None  # null replaces a value too
    assert load_config("top.yaml", ["optim.lr=0.3", "model.hidden=[4]"]).optim.lr == 0.3
    assert load_config("top.yaml", ["model.hidden=[4]"]).model.hidden == [4]
    write(here / "swapped.yaml", "defaults: [base/b.yaml, base/a.yaml]\n")
    swapped = load_config("swapped.yaml")
    assert swapped.model.hidden == [64, 64] and swapped.model.init == "xavier" and swapped.optim.lr == 0.5


def test_a_chain_and_a_shared_base_compose_once_and_every_file_is_recorded(here):
    write(here / "common.yaml", "seed: 5\noptim: {lr: 0.3}\n")
    write(here / "sub/mid1.yaml", "defaults: ../common.yaml\noptim: {lr: 0.2}\n")
    write(here / "sub/mid2.yaml", "defaults: [../common.yaml]\nmodel: {hidden: [3]}\n")
    write(here / "top.yaml", "defaults: [sub/mid1.yaml, sub/mid2.yaml]\nname: top\n")
    loaded = compose_config("top.yaml")
    # mid2 brings common's lr again, over mid1's: each base is composed whole before the next one is merged
    assert (loaded.config.seed, loaded.config.optim.lr, loaded.config.model.hidden) == (5, 0.3, [3])
    assert [(s.path, s.included_by) for s in loaded.sources] == [
        ("top.yaml", ()), ("sub/mid1.yaml", ("top.yaml",)), ("common.yaml", ("sub/mid1.yaml", "top.yaml")),
        ("sub/mid2.yaml", ("top.yaml",))]
    assert loaded.sources[2].sha256 == hashlib.sha256((here / "common.yaml").read_bytes()).hexdigest()
    assert "defaults" not in compose.compose_file("top.yaml").raw


def test_validate_lists_the_files_as_comments_and_the_schema_knows_defaults(here):
    write(here / "base.yaml", "model: {hidden: [8]}\n")
    write(here / "top.yaml", "defaults: base.yaml\nname: top\n")
    result = invoke("validate", "top.yaml")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("# top.yaml composed with its defaults:\n#   base.yaml (included by top.yaml)\n")
    assert yaml.safe_load(result.stdout) == load_config("top.yaml").model_dump(mode="json")
    as_json = invoke("validate", "top.yaml", "--json")
    assert json.loads(as_json.stdout) == load_config("top.yaml").model_dump(mode="json")
    plain = invoke("validate", "base.yaml")
    assert not plain.stdout.startswith("#")  # a file without defaults prints as before
    assert "defaults" in ExperimentConfig.model_json_schema()["properties"]


# ---- errors: the file, the key and the chain of files ------------------------------------------------------

def test_a_bad_value_or_unknown_key_from_a_base_names_the_key_and_the_chain_of_files(here):
    write(here / "base/deep.yaml", "optim: {lr: -1, lrr: 2}\nmodel: {init: kaiming}\n")
    write(here / "base/mid.yaml", "defaults: deep.yaml\n")
    write(here / "top.yaml", "defaults: base/mid.yaml\ntrain: {epochs: 0}\n")
    chain = "set in base/deep.yaml, included by base/mid.yaml, included by top.yaml"
    message = flat(invoke_error("validate", "top.yaml"))
    assert message.startswith("error: invalid config (top.yaml):")
    assert f"optim.lr: Input should be greater than 0 (got -1); {chain}" in message
    assert "optim.lrr: unknown key; allowed keys here:" in message and f"'optim.lr'?; {chain}" in message
    assert "model.init: Input should be" in message and f"did you mean 'he'?; {chain}" in message
    assert message.endswith("train.epochs: Input should be greater than or equal to 1 (got 0)")  # its own key
    overridden = flat(invoke_error("validate", "top.yaml", "--set", "optim.lr=-2"))
    assert "optim.lr: Input should be greater than 0 (got -2) optim.lrr" in overridden  # --set's, not the base's


def test_a_check_across_keys_names_the_files_of_the_keys_it_names(here):
    write(here / "base.yaml", "preprocess: {pca: 3, center: global}\n")
    write(here / "top.yaml", "defaults: base.yaml\n")
    message = flat(invoke_error("validate", "top.yaml"))
    assert "preprocess.center must be per_feature" in message
    assert "; preprocess.center, preprocess.pca set in base.yaml, included by top.yaml" in message


DEEP = 9
FILE_ERRORS = {
    "missing": ({"top.yaml": "defaults: [base/nope.yaml]\n"},
                "top.yaml: defaults: 'base/nope.yaml': base/nope.yaml not found (a path in defaults is relative to "
                "the folder of the file that names it)"),
    "missing_suffix": ({"top.yaml": "defaults: base\n", "base.yaml": "seed: 1\n"},
                       "base not found (a path in defaults is relative to the folder of the file that names it); "
                       "did you mean 'base.yaml'?"),
    "missing_in_a_base": ({"top.yaml": "defaults: sub/b.yaml\n", "sub/b.yaml": "defaults: c.yaml\n"},
                          "sub/b.yaml (included by top.yaml): defaults: 'c.yaml': sub/c.yaml not found"),
    "cycle": ({"a.yaml": "defaults: b.yaml\n", "b.yaml": "defaults: [c.yaml]\n", "c.yaml": "defaults: a.yaml\n"},
              "c.yaml (included by b.yaml, included by a.yaml): defaults: 'a.yaml' makes a cycle "
              "(a.yaml -> b.yaml -> c.yaml -> a.yaml)"),
    "self": ({"a.yaml": "defaults: ./a.yaml\n"}, "a.yaml: defaults: './a.yaml' makes a cycle (a.yaml -> a.yaml)"),
    "too_deep": ({"a.yaml": "defaults: f1.yaml\n",
                  **{f"f{i}.yaml": f"defaults: f{i + 1}.yaml\n" for i in range(1, DEEP)}, f"f{DEEP}.yaml": "seed: 1\n"},
                 f"defaults: 'f8.yaml': defaults nest more than {compose.MAX_DEPTH} files deep "
                 "(a.yaml -> f1.yaml -> f2.yaml -> f3.yaml -> f4.yaml -> f5.yaml -> f6.yaml -> f7.yaml -> f8.yaml)"),
    "too_many": ({"a.yaml": "defaults: [" + ", ".join(f"f{i}.yaml" for i in range(40)) + "]\n",
                  **{f"f{i}.yaml": f"seed: {i}\n" for i in range(40)}},
                 f"f31.yaml (included by a.yaml): a config is composed of at most {compose.MAX_FILES} files"),
    "not_a_mapping": ({"a.yaml": "defaults: b.yaml\n", "b.yaml": "- 1\n- 2\n"},
                      "config file b.yaml must hold a mapping of sections, got list (included by a.yaml)"),
    "bad_yaml": ({"a.yaml": "defaults: b.yaml\n", "b.yaml": "optim:\n  lr: 0.1\n  bad: : :\n"},
                 "config file b.yaml is not valid YAML at line 3"),
    "defaults_a_mapping": ({"a.yaml": "defaults: {b: c.yaml}\n"},
                           "a.yaml: defaults: expected the path of a config file or a list of paths (relative to "
                           "this file's folder), got {'b': 'c.yaml'}"),
    "defaults_a_number": ({"a.yaml": "defaults: b.yaml\n", "b.yaml": "defaults: [c.yaml, 3]\n"},
                          "b.yaml (included by a.yaml): defaults: expected the path of a config file"),
    "listed_twice": ({"a.yaml": "defaults: [b.yaml, ./b.yaml]\n", "b.yaml": "seed: 1\n"},
                     "a.yaml: defaults: './b.yaml' is listed twice (as 'b.yaml' too); list each file once"),
    "nul_byte": ({"a.yaml": 'defaults: "b\\0.yaml"\n'},
                 "cannot read a.yaml: defaults: 'b\\x00.yaml': embedded null byte"),
    "path_too_long": ({"a.yaml": "defaults: " + "x" * 5000 + "\n"},
                      "cannot read a.yaml: defaults: 'xxxxxxxxxx"),
    "defaults_inside_a_section": ({"a.yaml": "defaults: b.yaml\n", "b.yaml": "optim: {defaults: c.yaml}\n"},
                                  "optim.defaults: unknown key"),
}


@pytest.mark.parametrize("case", list(FILE_ERRORS))
def test_every_composition_error_is_one_message_naming_the_file_the_key_and_the_chain(here, case):
    files, expected = FILE_ERRORS[case]
    for name, text in files.items():
        write(here / name, text)
    top = "top.yaml" if "top.yaml" in files else "a.yaml"
    message = flat(invoke_error("validate", top))
    assert flat(expected) in message
    assert message.count("error:") == 1 and len(message) < 600  # one message, never a 5,000-character echo


@pytest.mark.parametrize("name", list(hostile_cases.CONFIG_CASES))
def test_yaml_limits_hold_in_every_included_file_and_name_it(tmp_path, name):
    base, expected = hostile_cases.CONFIG_CASES[name](tmp_path)
    top = write(tmp_path / "top.yaml", f"defaults: {base.name}\n")
    message = flat(invoke_error("validate", top))
    assert expected in message
    assert str(base) in message and (f"included by {top}" in message)


def test_the_files_of_one_config_share_one_byte_and_one_value_budget(here, monkeypatch):
    monkeypatch.setattr(compose, "MAX_NODES", 300)
    write(here / "a.yaml", "loss: {tree: [" + ", ".join(["x"] * 200) + "]}\n")  # 200 values: fine alone
    write(here / "b.yaml", "model: {hidden: [" + ", ".join(["1"] * 200) + "]}\n")
    write(here / "top.yaml", "defaults: [a.yaml, b.yaml]\n")
    compose.compose_file("a.yaml")
    compose.compose_file("b.yaml")
    message = flat(invoke_error("validate", "top.yaml"))
    assert "config file b.yaml is not valid YAML at line 1" in message and "holds more than" in message
    assert "the files of one config share" in message and "300 values" in message
    assert "(included by top.yaml)" in message
    monkeypatch.setattr(compose, "MAX_NODES", 50_000)
    monkeypatch.setattr(compose, "MAX_TOTAL_BYTES", 1500)
    write(here / "a.yaml", "# " + "x" * 1000 + "\nseed: 1\n")
    write(here / "b.yaml", "# " + "x" * 1000 + "\nseed: 2\n")
    message = flat(invoke_error("validate", "top.yaml"))
    assert "config file b.yaml is 1011 bytes; a config is at most 462 bytes" in message
    assert "the files of one config share 1500 bytes" in message


def test_set_cannot_add_defaults(here):
    write(here / "top.yaml", "seed: 1\n")
    assert "--set defaults: defaults names the files a config file is composed of" in flat(
        invoke_error("validate", "top.yaml", "--set", "defaults=x.yaml"))


# ---- run directories, sweeps, studies ----------------------------------------------------------------------

def test_a_run_records_the_resolved_config_and_its_files_and_needs_none_of_them_later(here):
    from nnrun.experiment import load_run

    write(here / "base/tiny.yaml", "model: {hidden: [8]}\ntrain: {epochs: 1, batch_size: 256}\noptim: {lr: 0.05}\n")
    write(here / "top.yaml", "defaults: base/tiny.yaml\nname: composed\n")
    cfg = load_config("top.yaml")
    result = invoke("train", "top.yaml", "--out", "run", "--quiet")
    assert result.exit_code == 0, result.output
    saved = yaml.safe_load((here / "run/config.yaml").read_text())
    assert saved == cfg.model_dump(mode="json") and "defaults" not in saved
    files = json.loads((here / "run/provenance.json").read_text())["config_files"]
    assert files == [
        {"path": "top.yaml", "sha256": hashlib.sha256((here / "top.yaml").read_bytes()).hexdigest(), "included_by": []},
        {"path": os.path.join("base", "tiny.yaml"),
         "sha256": hashlib.sha256((here / "base/tiny.yaml").read_bytes()).hexdigest(), "included_by": ["top.yaml"]}]
    shutil.rmtree(here / "base")
    (here / "top.yaml").unlink()
    assert load_run(here / "run").cfg == cfg  # the run is whole without the files it was composed of
    resumed = invoke("train", "--resume", "run", "--set", "train.epochs=2", "--quiet")
    assert resumed.exit_code == 0, resumed.output
    provenance = json.loads((here / "run/provenance.json").read_text())
    assert provenance["config_files"] == files and provenance["earlier_sessions"][0]["config_files"] == files
    # a run directory's config.yaml is resolved: a defaults key there is refused, never read
    write(here / "other.yaml", "seed: 1\n")
    with open(here / "run/config.yaml", "a") as f:
        f.write("defaults: ../other.yaml\n")
    with pytest.raises(UserInputError, match="defaults: unknown key"):
        load_run(here / "run")
    assert "defaults: unknown key" in flat(invoke_error("train", "--resume", "run", "--set", "train.epochs=3"))


def test_a_sweep_of_a_composed_config_finds_the_runs_of_the_same_resolved_config(here):
    from nnrun.sweep.plan import plan_sweep

    write(here / "base.yaml", "model: {hidden: [8]}\noptim: {lr: 0.05}\n")
    write(here / "top.yaml", "defaults: base.yaml\nname: s\n")
    write(here / "flat.yaml", load_config("top.yaml").to_yaml())
    composed = plan_sweep("top.yaml", grid=["seed=0,1"], runs_dir="runs")
    flat_plan = plan_sweep("flat.yaml", grid=["seed=0,1"], runs_dir="runs")
    assert [p.run_dir for p in composed.points] == [p.run_dir for p in flat_plan.points]
    write(here / "base.yaml", "model: {hidden: [8]}\noptim: {lr: 0.06}\n")  # the base changes: other runs
    changed = plan_sweep("top.yaml", grid=["seed=0,1"], runs_dir="runs")
    assert not {p.run_dir for p in changed.points} & {p.run_dir for p in composed.points}
    write(here / "bad.yaml", "defaults: base.yaml\noptim: {momentum: 2}\n")
    write(here / "base.yaml", "optim: {lr: -1}\n")
    with pytest.raises(UserInputError, match=r"optim.lr: .* \(got -1\); set in base.yaml, included by bad.yaml"):
        plan_sweep("bad.yaml", grid=["seed=0,1"], runs_dir="runs")


def test_a_study_composes_the_config_it_names(here):
    from nnrun.study.spec import load_study

    write(here / "configs/base.yaml", "model: {hidden: [8]}\noptim: {lr: 0.05}\n")
    write(here / "configs/top.yaml", "defaults: base.yaml\nname: t\n")
    claim = {"id": "c", "statement": "s", "metric": "test_accuracy", "arms": {"a": {"model.init": "zeros"}, "b": {}},
             "expect": [{"a": "b", "relation": "greater", "b": "a"}]}
    write(here / "studies/s.yaml", yaml.safe_dump({
        "name": "s", "config": "../configs/top.yaml", "base": {"train": {"epochs": 1}},
        "budgets": {"quick": {"seeds": 2, "max_minutes": 10}}, "claims": [claim]}))
    _, base = load_study(here / "studies/s.yaml")
    assert base == {"model": {"hidden": [8]}, "optim": {"lr": 0.05}, "name": "t", "train": {"epochs": 1}}


# ---- configs/ ----------------------------------------------------------------------------------------------

def test_every_config_resolves_exactly_as_before_it_was_split_into_bases():
    before = json.loads(BEFORE.read_text())
    assert len(before) == 45
    for name, raw in before.items():
        assert load_config(CONFIGS / name).model_dump(mode="json") == validate_config(raw).model_dump(mode="json"), \
            name
    composed = [p.name for p in CONFIGS.glob("*.yaml") if len(compose_config(p).sources) > 1]
    assert len(composed) >= 40  # the near-copies are gone
    used = {Path(s.path).resolve() for p in CONFIGS.glob("*.yaml") for s in compose_config(p).sources}
    for base in (CONFIGS / "base").glob("*.yaml"):
        assert base.resolve() in used, f"{base.name} is no config's base"
        load_config(base)  # a base is a valid config on its own
