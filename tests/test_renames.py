"""Renamed names keep working for one release, with a DeprecationWarning naming the new one:
TransferConfig.val_fraction -> test_fraction (keyword, YAML/JSON file, --set), synth Cohort -> SyntheticCohort.
Giving an old and a new key together is an error naming where."""
from __future__ import annotations

import contextlib
import dataclasses
import pickle
import warnings
from pathlib import Path

import pytest

from age2hie_hub._config import check_keys, renamed_fields
from age2hie_hub.train.cli import main
from age2hie_hub.train.config import ExperimentConfig, PretrainConfig, TransferConfig, load_config, to_dict

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
RENAMED = r"'val_fraction' is now 'test_fraction'"


@contextlib.contextmanager
def no_deprecation():
    """Any DeprecationWarning inside fails the test (the negative controls)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        yield


# ---- the general mechanism (_config.renamed_fields) -------------------------------------------------------

@renamed_fields(old_name="new_name")
@dataclasses.dataclass(frozen=True)
class _Toy:
    new_name: int = 1
    other: int = 2


def test_renamed_field_reads_the_old_keyword_with_a_warning():
    with pytest.warns(DeprecationWarning, match="'old_name' is now 'new_name'"):
        toy = _Toy(old_name=5)
    assert toy == _Toy(new_name=5) and not hasattr(toy, "old_name")
    assert [f.name for f in dataclasses.fields(_Toy)] == ["new_name", "other"]
    with pytest.raises(ValueError, match="both 'old_name' and 'new_name' are given"):
        _Toy(old_name=5, new_name=6)
    with no_deprecation():  # the new name, positional arguments and dataclasses.replace warn about nothing
        assert _Toy(new_name=5).new_name == 5 and _Toy(7, 8).other == 8
        assert dataclasses.replace(_Toy(), new_name=3).new_name == 3
    with pytest.raises(TypeError, match="unexpected keyword argument 'typo'"):
        _Toy(typo=1)


def test_check_keys_accepts_a_former_name_and_still_refuses_typos():
    check_keys(_Toy, {"old_name": 1, "other": 2})
    with pytest.raises(ValueError, match=r"unknown field\(s\) \['old_nmae'\]"):
        check_keys(_Toy, {"old_nmae": 1})


def test_renamed_fields_refuses_a_table_that_does_not_match_the_class():
    with pytest.raises(TypeError, match="renamed_fields needs"):
        renamed_fields(other="new_name")(_Toy)  # 'other' is a current field, not a former name
    with pytest.raises(TypeError, match="renamed_fields needs"):
        renamed_fields(gone="missing")(_Toy)  # 'missing' is not a field


# ---- TransferConfig.val_fraction -> test_fraction -----------------------------------------------------------

def test_transfer_config_keyword():
    with pytest.warns(DeprecationWarning, match=RENAMED):
        cfg = TransferConfig(val_fraction=0.3)
    assert cfg == TransferConfig(test_fraction=0.3) and cfg.test_fraction == 0.3
    with pytest.raises(ValueError, match="both 'val_fraction' and 'test_fraction'"):
        TransferConfig(val_fraction=0.3, test_fraction=0.2)
    # Plain data and pickles (the cross-validation's worker processes) carry the new name only.
    assert "test_fraction" in to_dict(cfg) and "val_fraction" not in to_dict(cfg)
    assert pickle.loads(pickle.dumps(cfg)) == cfg


def test_pretrain_val_fraction_is_not_renamed():
    """PretrainConfig has both: a test_fraction and a genuine early-stopping val_fraction."""
    with no_deprecation():
        cfg = PretrainConfig(test_fraction=0.2, val_fraction=0.1)
    assert (cfg.test_fraction, cfg.val_fraction) == (0.2, 0.1)


@pytest.mark.parametrize("suffix,text", [(".yaml", "val_fraction: 0.25\nseed: 3\n"),
                                         (".json", '{"val_fraction": 0.25, "seed": 3}')])
def test_old_key_in_a_file_reads_with_a_warning_naming_the_file(tmp_path, suffix, text):
    path = tmp_path / f"t{suffix}"
    path.write_text(text)
    with pytest.warns(DeprecationWarning, match=str(path).replace("\\", "\\\\") + ".*" + RENAMED):
        cfg = load_config(path, TransferConfig)
    assert cfg.test_fraction == 0.25 and cfg.seed == 3


def test_old_key_in_an_experiments_transfer_section(tmp_path):
    path = tmp_path / "e.yaml"
    path.write_text("transfer: {val_fraction: 0.25}\n")
    with pytest.warns(DeprecationWarning, match=r"e\.yaml\.transfer: " + RENAMED):
        cfg = load_config(path, ExperimentConfig)
    assert cfg.transfer.test_fraction == 0.25
    # The pretrain section's val_fraction is its own early-stopping fraction: read as it is, no warning.
    path.write_text("pretrain: {val_fraction: 0.05}\ntransfer: {test_fraction: 0.25}\n")
    with no_deprecation():
        cfg = load_config(path, ExperimentConfig)
    assert cfg.pretrain.val_fraction == 0.05 and cfg.transfer.test_fraction == 0.25


@pytest.mark.parametrize("text,where", [("val_fraction: 0.2\ntest_fraction: 0.1\n", r"both\.yaml.*: both"),
                                        ("transfer: {val_fraction: 0.2, test_fraction: 0.1}\n",
                                         r"both\.yaml.*\.transfer: both")])
def test_both_keys_in_a_file_is_an_error_naming_it(tmp_path, text, where):
    path = tmp_path / "both.yaml"
    path.write_text(text)
    cls = ExperimentConfig if text.startswith("transfer") else TransferConfig
    with pytest.raises(ValueError, match=where + " 'val_fraction' and 'test_fraction' are given"):
        load_config(path, cls)
    with pytest.raises(ValueError, match=where):  # an unrelated --set does not hide the conflict
        load_config(path, cls, ["seed=1"] if cls is TransferConfig else ["k=3"])


def test_old_key_in_a_set_override(tmp_path):
    path = tmp_path / "e.yaml"
    path.write_text("transfer: {test_fraction: 0.25}\n")
    with pytest.warns(DeprecationWarning, match=r"--set 'transfer\.val_fraction=0\.1': " + RENAMED):
        cfg = load_config(path, ExperimentConfig, ["transfer.val_fraction=0.1"])
    assert cfg.transfer.test_fraction == 0.1  # the override wins over the file's new key
    # A --set with the new key on a file that still has the old one: the override wins; the file is named.
    path.write_text("transfer: {val_fraction: 0.25}\n")
    with pytest.warns(DeprecationWarning, match=r"e\.yaml\.transfer: " + RENAMED):
        cfg = load_config(path, ExperimentConfig, ["transfer.test_fraction=0.05"])
    assert cfg.transfer.test_fraction == 0.05
    # Negative controls: the new key warns about nothing; a typo is still an error naming the valid keys.
    path.write_text("transfer: {test_fraction: 0.25}\n")
    with no_deprecation():
        assert load_config(path, ExperimentConfig, ["transfer.test_fraction=0.05"]).transfer.test_fraction == 0.05
    with pytest.raises(ValueError, match=r"unknown key 'val_fractoin' under transfer; valid keys .*'test_fraction'"):
        load_config(path, ExperimentConfig, ["transfer.val_fractoin=0.1"])


def test_shipped_configs_use_the_current_names():
    with no_deprecation():
        for name, cls in [("bundle_age2hie.yaml", ExperimentConfig), ("synthetic_experiment.yaml", ExperimentConfig),
                          ("real_bonbid_lesion_burden.yaml", ExperimentConfig),
                          ("bundle_brain_age.yaml", PretrainConfig),
                          ("real_bonbid_lesion_burden_final.yaml", TransferConfig)]:
            load_config(CONFIGS / name, cls)


@pytest.mark.parametrize("key,warned", [("val_fraction", True), ("test_fraction", False)])
def test_cli_shows_the_deprecation_as_one_warning_line(tmp_path, capsys, key, warned):
    path = tmp_path / "t.yaml"
    path.write_text(f"{key}: 0.2\ndata: {{format: csv, path: {tmp_path / 'missing.csv'}, target: y}}\n")
    assert main(["transfer", str(path), "--run-dir", str(tmp_path / "run")]) == 1  # the data does not exist
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("age2hie-train: error:") and "missing.csv" in err[-1]
    notes = [line for line in err if "is now 'test_fraction'" in line]
    assert len(notes) == (1 if warned else 0), err
    if warned:
        assert notes[0].startswith("WARNING: ") and str(path) in notes[0]


# ---- synth.Cohort -> SyntheticCohort -----------------------------------------------------------------------

def test_synthetic_cohort_old_name_warns_and_is_the_same_class():
    import age2hie_hub.synth as synth
    from age2hie_hub.synth import cohort as module
    from age2hie_hub.synth.cohort import SyntheticCohort
    from age2hie_hub.train.manifest import Cohort as TrainingCohort

    with pytest.warns(DeprecationWarning, match="synth.Cohort is now SyntheticCohort"):
        assert synth.Cohort is SyntheticCohort
    with pytest.warns(DeprecationWarning, match="synth.cohort.Cohort is now SyntheticCohort"):
        assert module.Cohort is SyntheticCohort
    assert TrainingCohort is not SyntheticCohort  # the training cohort keeps its name
    with no_deprecation():
        assert synth.SyntheticCohort is SyntheticCohort and "Cohort" not in synth.__all__
    with pytest.raises(AttributeError, match="has no attribute 'Cohorts'"):
        synth.Cohorts  # noqa: B018 - only the one old name is kept
    with pytest.raises(AttributeError, match="has no attribute 'Cohorts'"):
        module.Cohorts  # noqa: B018
