"""age2hie-train: config defaults round-trip, loud config errors (exit 1, one line), instant --help."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from age2hie_hub.train.cli import main
from age2hie_hub.train.config import ExperimentConfig, PretrainConfig, TransferConfig, load_config, to_dict

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("kind,cls", [("pretrain", PretrainConfig), ("transfer", TransferConfig),
                                      ("experiment", ExperimentConfig)])
def test_defaults_round_trip(kind, cls, tmp_path, capsys):
    assert main(["defaults", kind]) == 0
    path = tmp_path / "c.yaml"
    path.write_text(capsys.readouterr().out)
    assert to_dict(load_config(path, cls)) == to_dict(cls())
    assert main(["defaults", kind, "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == to_dict(cls())


def test_shipped_example_config_is_valid():
    cfg = load_config(REPO / "configs" / "synthetic_experiment.yaml", ExperimentConfig)
    assert cfg.pretrain is not None and cfg.pretrain.synthetic and cfg.transfer.synthetic
    assert [m.name for m in cfg.methods] == ["transfer", "scratch"]


@pytest.mark.parametrize("text,message", [
    ("loop: {epochs: 2, lrate: 0.1}\n", "unknown field(s) ['lrate']"),
    ("loop: {epochs: 0}\n", "epochs must be >= 1"),
    ("data: [1, 2\n", "not valid YAML"),
    ("data: {format: bids, path: /nonexistent/bids, target: age}\n", "participants.tsv: file not found"),
])
def test_bad_configs_fail_with_one_line(text, message, tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    assert main(["pretrain", str(path), "--run-dir", str(tmp_path / "run")]) == 1
    err = capsys.readouterr().err.strip()
    assert message in err and err.startswith("age2hie-train: error:") and len(err.splitlines()) == 1
    assert not (tmp_path / "run" / "checkpoint").exists()


def test_missing_config_file(tmp_path, capsys):
    assert main(["transfer", str(tmp_path / "nope.yaml")]) == 1
    assert "config file not found" in capsys.readouterr().err


def test_help_does_not_import_torch():
    code = "import sys; from age2hie_hub.train import cli; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    assert main.__module__ == "age2hie_hub.train.cli"
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
