"""Input that would lose work or give wrong results is rejected before anything is written."""

import json
import os
import re
import sys

import pytest
import torch
from test_cli import TINY, exit_status, run_script, write_config

from bem.config import ConfigError
from bem.files import write_text_atomic
from bem.Logger import DefaultLogger
from dlpm.cli import build_config, build_parser
from dlpm.config_schema import build_schema


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A run of 2 epochs with checkpoints at 1 and 2, evaluated at epoch 2."""
    folder = tmp_path_factory.mktemp("guards")
    config = write_config(folder, TINY)
    result = run_script(
        "run.py", folder, "--config", str(config), "--name", "g", "--epochs", "2", "--check", "1",
        "--eval", "2",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return folder, folder / "models" / "g"


def snapshot(run_dir):
    """Contents of every file of the run folder, to show that a rejected command wrote nothing."""
    return {p.name: p.read_bytes() for p in sorted(run_dir.iterdir()) if p.is_file()}


@pytest.mark.parametrize(
    ("script", "flags", "message"),
    [
        ("run.py", ["--overwrite", "--logger", "nosuch_module:Thing"], "invalid logger"),
        ("run.py", ["--resume", "--epochs", "3", "--logger", "json:dumps"], "json:dumps is not"),
        ("run.py", ["--resume", "--epochs", "3", "--alpha", "1.5"], "diffusion.alpha"),
        ("run.py", ["--resume", "--epochs", "3", "--units", "32"], "model.mlp.nunits"),
        ("run.py", ["--resume", "--overwrite"], "pass only one"),
        ("run.py", ["--resume", "--epochs", "2"], "does not exceed the 2 epochs"),
        ("run.py", ["--resume"], "does not exceed the 2 epochs"),
        ("run.py", ["--resume", "--epochs", "3", "--lr", "0.001"], "optim.lr"),
        ("run.py", ["--config", "/"], "is a folder"),
        ("eval.py", ["--dlim_eta", "0.5"], "sampling.dlim_eta"),
        ("run.py", ["--log", "mlflow", "--logger", "tensorboard"], "pass only one"),
        ("eval.py", ["--ema_rates", "0.5"], "training.ema_rates"),
        ("eval.py", ["--train_reverse_steps", "50"], "diffusion.reverse_steps"),
        ("eval.py", ["--lr", "0.01"], "optim.lr"),
        ("eval.py", ["--nsamples", "100"], "data.nsamples"),
    ],
)
def test_rejected_flags_write_nothing(trained, monkeypatch, capsys, script, flags, message):
    folder, run_dir = trained
    before = snapshot(run_dir)
    assert exit_status(script, folder, monkeypatch, "--name", "g", *flags) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert message in err[0]
    assert snapshot(run_dir) == before


def test_old_epoch_eval_keeps_curve(trained):
    folder, run_dir = trained
    before = (run_dir / "loss_curve.png").read_bytes()
    result = run_script("eval.py", folder, "--name", "g", "--epochs", "1")
    assert result.returncode == 0, result.stderr
    assert (run_dir / "loss_curve.png").read_bytes() == before
    # The run's own config is not printed in full, only named.
    assert "resolved config" not in result.stdout
    assert f"config: {os.path.join('models', 'g', 'config.yml')}" in result.stdout


def test_interrupted_evaluation_names_fix(tmp_path, monkeypatch, capsys):
    from bem.evaluation import Evaluator

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(Evaluator, "evaluate", interrupt)
    config = write_config(tmp_path, TINY)
    args = ("--config", str(config), "--name", "i", "--epochs", "1", "--eval", "1")
    assert exit_status("run.py", tmp_path, monkeypatch, *args) == 130
    err = capsys.readouterr().err
    assert "interrupted while evaluating epoch 1" in err
    assert "python eval.py --name i --epochs 1" in err
    assert (tmp_path / "models" / "i" / "checkpoint_1.pt").is_file()


def test_resume_drops_later_metrics(tmp_path, monkeypatch):
    # Stand-in for Ctrl-C after epoch 3 of a run saved at epoch 1: remove the later checkpoints.
    config = write_config(tmp_path, TINY)
    args = ("--config", str(config), "--name", "m", "--check", "1")
    assert exit_status("run.py", tmp_path, monkeypatch, *args, "--epochs", "3") == 0
    run_dir = tmp_path / "models" / "m"
    for epoch in (2, 3):
        (run_dir / f"checkpoint_{epoch}.pt").unlink()
    assert exit_status("run.py", tmp_path, monkeypatch, "--name", "m", "--resume") == 0
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    loss_steps = [r["step"] for r in records if r["key"] == "loss"]
    # Epochs 2 and 3 were trained twice, but only the resumed run's records remain.
    assert loss_steps == [1, 2, 3]


def test_purge_keeps_records_without_step(tmp_path):
    lines = [
        {"key": "parameters", "value": 10, "step": None},
        {"key": "loss", "value": 1.0, "step": 1},
        {"key": "loss", "value": 0.5, "step": 2},
    ]
    text = "".join(json.dumps(line) + "\n" for line in lines) + "not json\n"
    (tmp_path / "metrics.jsonl").write_text(text)
    assert DefaultLogger(tmp_path).purge_from(2) == 1
    remaining = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert remaining == [json.dumps(lines[0]), json.dumps(lines[1]), "not json"]


def test_atomic_files_get_the_usual_mode(tmp_path):
    old_mask = os.umask(0o022)
    try:
        write_text_atomic(tmp_path / "a.txt", "x")
    finally:
        os.umask(old_mask)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o644


def test_truncated_checkpoint_names_fix(trained, tmp_path):
    from bem.checkpoint import CheckpointError, load_checkpoint

    _, run_dir = trained
    data = (run_dir / "checkpoint_1.pt").read_bytes()
    broken = tmp_path / "checkpoint_1.pt"
    broken.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="move it out of the run folder") as error:
        load_checkpoint(broken)
    assert "\n" not in str(error.value)


def test_other_architecture_error_is_short(trained, monkeypatch, capsys):
    folder, run_dir = trained
    checkpoint = torch.load(run_dir / "checkpoint_2.pt", weights_only=True)
    assert checkpoint["epoch"] == 2
    other = write_config(folder, TINY | {"model": {"mlp": {"nunits": 8, "nblocks": 2}}}, "o.yml")
    status = exit_status("eval.py", folder, monkeypatch, "--name", "g", "--config", str(other))
    assert status == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "model.mlp" in err[0]


def test_parser_error_is_one_line(monkeypatch, capsys, tmp_path):
    assert exit_status("run.py", tmp_path, monkeypatch, "--alpha", "abc") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].endswith("error: argument --alpha: expected float, got 'abc' (see --help)")


@pytest.mark.parametrize(
    ("section", "key", "value", "hint"),
    [
        ("optim", "lr", "1e-3", "YAML reads 1e-3 as a string, write 1.0e-3"),
        ("data", "nsamples", "1e3", "YAML reads 1e3 as a string, write 1000"),
        ("diffusion", "alpha", "1.7", "remove the quotes around the number"),
    ],
)
def test_string_number_gets_hint(section, key, value, hint):
    p = dict(TINY)
    p[section] = {**TINY.get(section, {}), key: value}
    with pytest.raises(ConfigError, match=hint):
        build_schema().parse(p)


def test_null_section_is_rejected():
    with pytest.raises(ConfigError, match="section 'data' is empty"):
        build_schema().parse(TINY | {"data": None})


@pytest.mark.parametrize("terminal", [True, False])
def test_progress_only_on_terminal(tmp_path, monkeypatch, terminal):
    class Stream:
        def isatty(self):
            return terminal

        def write(self, text):
            return len(text)

    config = write_config(tmp_path, TINY | {"run": {**TINY["run"], "progress": True}})
    args = build_parser("run", "test").parse_args(["--config", str(config)])
    monkeypatch.setattr(sys, "stderr", Stream())
    assert build_config(args, "run")["run"]["progress"] is terminal


def test_eval_reads_checkpoint_config(trained, tmp_path):
    import shutil

    import yaml

    folder, run_dir = trained
    copy = tmp_path / "models" / "g"
    shutil.copytree(run_dir, copy)
    (copy / "config.yml").unlink()
    result = run_script("eval.py", tmp_path, "--name", "g", "--generate", "100")
    assert result.returncode == 0, result.stderr
    assert "config.yml is missing" in result.stdout
    stored = torch.load(copy / "checkpoint_2.pt", weights_only=True)["config"]
    assert yaml.safe_load((copy / "config.yml").read_text()) == stored
    epoch = json.loads((copy / "eval_results.json").read_text())["epochs"]["2"]
    assert epoch["settings"]["nsamples"] == 200
    assert epoch["by_settings"]["nsamples-100"]["settings"]["nsamples"] == 100


def test_interrupted_eval_exits_130(trained, tmp_path, monkeypatch, capsys):
    import shutil

    from bem.evaluation import Evaluator

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    _, run_dir = trained
    shutil.copytree(run_dir, tmp_path / "models" / "g")
    monkeypatch.setattr(Evaluator, "evaluate", interrupt)
    assert exit_status("eval.py", tmp_path, monkeypatch, "--name", "g") == 130
    assert "interrupted" in capsys.readouterr().err


def test_unusable_tracker_exits_2(trained, monkeypatch, capsys):
    # Without the neptune package, or without a project in server mode, the tracker cannot
    # start. Either way the run stays as it was.
    folder, run_dir = trained
    for variable in ("NEPTUNE_MODE", "NEPTUNE_PROJECT", "NEPTUNE_API_TOKEN"):
        monkeypatch.delenv(variable, raising=False)
    before = snapshot(run_dir)
    args = ("--name", "g", "--overwrite", "--logger", "neptune")
    assert exit_status("run.py", folder, monkeypatch, *args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert re.search("neptune package|NEPTUNE_PROJECT is not set", err[0])
    assert snapshot(run_dir) == before


def test_renamed_checkpoint_rejected(trained, tmp_path, monkeypatch, capsys):
    import shutil

    _, run_dir = trained
    copy = tmp_path / "models" / "g"
    shutil.copytree(run_dir, copy)
    (copy / "checkpoint_1.pt").unlink()
    (copy / "checkpoint_2.pt").rename(copy / "checkpoint_1.pt")
    assert exit_status("eval.py", tmp_path, monkeypatch, "--name", "g", "--epochs", "1") == 2
    assert "contains epoch 2, not 1" in capsys.readouterr().err
