"""age2hie-train --set section.key=value: overrides on top of the YAML, validated exactly like the file."""
from __future__ import annotations

import pytest

from age2hie_hub.train.cli import main
from age2hie_hub.train.config import ExperimentConfig, PretrainConfig, apply_overrides, load_config, to_dict

BASE = "loop: {epochs: 30, lr: 0.002}\npreprocess: {spacing: [5, 5, 5]}\nrun_dir: runs/x\n"


@pytest.fixture()
def config(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(BASE)
    return path


def test_overrides_replace_values_of_every_kind(config):
    cfg = load_config(config, PretrainConfig, ["loop.epochs=3", "loop.lr=1e-4", "preprocess.spacing=[4, 4, 4]",
                                               "augment.enabled=false", "test_fraction=0", "cv.folds=3"])
    assert cfg.loop.epochs == 3 and cfg.loop.lr == pytest.approx(1e-4)
    assert cfg.preprocess == {"spacing": [4, 4, 4]}
    assert cfg.augment.enabled is False and cfg.test_fraction == 0
    # A section the file left out (cv: None by default) is created from the value given.
    assert cfg.cv is not None and cfg.cv.folds == 3
    # Everything not named keeps the file's value (or its default).
    plain = load_config(config, PretrainConfig)
    assert cfg.run_dir == plain.run_dir and cfg.loop.schedule == plain.loop.schedule


def test_a_list_entry_is_addressed_by_index(tmp_path):
    path = tmp_path / "e.yaml"
    path.write_text("methods:\n  - {name: transfer, init: checkpoint, weights: a}\n"
                    "  - {name: scratch, init: scratch, stages: [scratch]}\n")
    cfg = load_config(path, ExperimentConfig, ["methods.0.weights=brain-age", "seeds=[0, 1, 2]"])
    assert cfg.methods[0].weights == "brain-age" and cfg.methods[1].name == "scratch"
    assert cfg.seeds == (0, 1, 2)
    with pytest.raises(ValueError, match="list of 2; use an index 0-1"):
        load_config(path, ExperimentConfig, ["methods.2.weights=x"])


@pytest.mark.parametrize("item,message", [
    ("loop.epoch=3", "unknown key 'epoch' under loop; valid keys are ["),
    ("lopp.epochs=3", "unknown key 'lopp' under the config; valid keys are ["),
    ("loop.epochs", "expected section.key=value"),
    ("=3", "expected section.key=value"),
    ("loop.epochs=[1, 2", "value is not valid YAML"),
    ("loop.epochs=0", "epochs must be >= 1"),  # the same check the file gets
    ("run_dir.x=1", "run_dir is not a section"),
])
def test_bad_overrides_are_refused_naming_the_problem(config, item, message):
    with pytest.raises(ValueError) as exc:
        load_config(config, PretrainConfig, [item])
    assert message in str(exc.value)


def test_valid_keys_are_listed(config):
    with pytest.raises(ValueError) as exc:
        load_config(config, PretrainConfig, ["loop.epoch=3"])
    assert "'epochs'" in str(exc.value) and "'lr'" in str(exc.value)


def test_the_callers_data_is_not_changed():
    data = {"loop": {"epochs": 30}}
    out = apply_overrides(data, ["loop.epochs=2"], PretrainConfig)
    assert data == {"loop": {"epochs": 30}} and out["loop"]["epochs"] == 2


def test_cli_set_reaches_the_run_and_bad_keys_exit_1(config, tmp_path, capsys):
    assert main(["pretrain", str(config), "--set", "loop.epoch=3", "--run-dir", str(tmp_path / "run")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("age2hie-train: error:") and "unknown key 'epoch'" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "run").exists()
    # Defaults printed with the override applied show it is the same config object the run would use.
    cfg = load_config(config, PretrainConfig, ["loop.epochs=7"])
    assert to_dict(cfg)["loop"]["epochs"] == 7
