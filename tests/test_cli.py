"""run.py and eval.py as subprocesses: tiny budgets, outputs on disk, exit status 2 on bad input."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from dlpm.cli import FLAGS, build_parser

ROOT = Path(__file__).resolve().parents[1]

TINY = {
    "seed": 0,
    "data": {"dataset": "sas", "std": 0.05, "nsamples": 256, "test_nsamples": 300},
    "diffusion": {"alpha": 1.7, "reverse_steps": 10},
    "sampling": {"reverse_steps": 10},
    "model": {"model_type": "mlp", "mlp": {"nunits": 16, "nblocks": 1}},
    "training": {"batch_size": 64, "ema_rates": [0.9]},
    "eval": {"nsamples": 200, "batch_size": 200},
    "run": {"epochs": 2, "progress": False, "device": "cpu"},
}


def run_script(script: str, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / script), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


def load_script(script: str):
    """Import ``run.py`` or ``eval.py`` as a module, to call its ``main`` in this process."""
    spec = importlib.util.spec_from_file_location(
        script.removesuffix(".py") + "_script", ROOT / script
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def exit_status(script: str, cwd: Path, monkeypatch, *args: str) -> int:
    """Run ``main`` of ``script`` in ``cwd`` and return its exit status."""
    monkeypatch.chdir(cwd)
    try:
        return load_script(script).main(list(args))
    except SystemExit as exit_:
        return exit_.code


def write_config(folder: Path, p: dict, name: str = "tiny.yml") -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump(p))
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A run trained for 4 epochs with checkpoints every 2 epochs and one evaluation."""
    folder = tmp_path_factory.mktemp("cli")
    config = write_config(folder, TINY)
    result = run_script(
        "run.py", folder, "--config", str(config), "--name", "tiny", "--epochs", "4",
        "--check", "2", "--eval", "4",
    )  # fmt: skip
    return folder, result


def test_run_trains_and_reports_outputs(trained):
    folder, result = trained
    assert result.returncode == 0, result.stderr
    run_dir = folder / "models" / "tiny"
    for name in ("checkpoint_2.pt", "checkpoint_4.pt", "config.yml", "metrics.jsonl"):
        assert (run_dir / name).is_file(), name
    assert (run_dir / "scatter_epoch4_model.png").is_file()
    assert "models/tiny/checkpoint_4.pt" in result.stdout
    results = json.loads((run_dir / "eval_results.json").read_text())
    assert set(results["epochs"]["4"]["variants"]) == {"model", "ema_0.9"}


def test_eval_evaluates_every_k_epochs(trained):
    folder, _ = trained
    result = run_script(
        "eval.py", folder, "--name", "tiny", "--epochs", "4", "--eval", "2", "--generate", "150"
    )
    assert result.returncode == 0, result.stderr
    results = json.loads((folder / "models" / "tiny" / "eval_results.json").read_text())
    assert list(results["epochs"]) == ["2", "4"]
    # Epoch 2 had no evaluation yet: these results are its first. Epoch 4 keeps its
    # training-time results (200 samples) and stores the 150-sample ones apart.
    assert results["epochs"]["2"]["settings"]["nsamples"] == 150
    assert "by_settings" not in results["epochs"]["2"]
    assert results["epochs"]["4"]["settings"]["nsamples"] == 200
    assert set(results["epochs"]["4"]["by_settings"]["nsamples-150"]["variants"]) == {
        "model",
        "ema_0.9",
    }
    assert (folder / "models" / "tiny" / "scatter_epoch4_model_nsamples-150.png").is_file()
    assert "evaluated epochs 2, 4" in result.stdout


def test_eval_under_run_settings_updates_training_results(trained, tmp_path):
    folder, _ = trained
    config = write_config(tmp_path, TINY)
    run = run_script(
        "run.py", tmp_path, "--config", str(config), "--name", "s", "--epochs", "1", "--eval", "1"
    )
    assert run.returncode == 0, run.stderr
    results_path = tmp_path / "models" / "s" / "eval_results.json"
    trained_metrics = json.loads(results_path.read_text())["epochs"]["1"]["variants"]["model"]
    again = run_script("eval.py", tmp_path, "--name", "s")
    steps = run_script(
        "eval.py", tmp_path, "--name", "s", "--reverse_steps", "5", "--deterministic"
    )
    assert again.returncode == 0, again.stderr
    assert steps.returncode == 0, steps.stderr
    epoch = json.loads(results_path.read_text())["epochs"]["1"]
    # Same settings and seed: the same numbers in the same place.
    assert epoch["variants"]["model"] == trained_metrics
    label = "deterministic-true_reverse_steps-5"
    assert epoch["by_settings"][label]["settings"]["sampling"]["reverse_steps"] == 5
    assert f"by_settings.{label}" in steps.stdout


def test_eval_missing_checkpoint_exits_2(trained, monkeypatch, capsys):
    folder, _ = trained
    assert exit_status("eval.py", folder, monkeypatch, "--name", "tiny", "--epochs", "3") == 2
    assert "no checkpoint for epoch" in capsys.readouterr().err


def test_resume_continues_run(trained, tmp_path):
    config = write_config(tmp_path, TINY)
    first = run_script("run.py", tmp_path, "--config", str(config), "--name", "r", "--epochs", "1")
    assert first.returncode == 0, first.stderr
    second = run_script(
        "run.py", tmp_path, "--config", str(config), "--name", "r", "--epochs", "2", "--resume"
    )
    assert second.returncode == 0, second.stderr
    assert "trained 2 epochs (8 steps)" in second.stdout


BAD_FLAGS = [
    (["--name", "../x"], "not a plain folder name"),
    (["--name", "a/b"], "not a plain folder name"),
    (["--alpha", "2.5"], "--alpha"),
    (["--train_reverse_steps", "-5"], "--train_reverse_steps"),
    (["--epochs", "ten"], "--epochs"),
    (["--method", "flow"], "--method"),
    (["--config", "no_such_config"], "no config named"),
    (["--resume"], "no checkpoint in"),
]


@pytest.mark.parametrize(("flags", "message"), BAD_FLAGS)
def test_bad_flags_exit_2_and_write_nothing(tmp_path, monkeypatch, capsys, flags, message):
    assert exit_status("run.py", tmp_path, monkeypatch, "--no_progress", *flags) == 2
    assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


BAD_CONFIGS = [
    ({"training": {"batch_sise": 8}}, "unknown config key 'training.batch_sise'"),
    ({"diffusion": {"alpha": 2.5}}, "'diffusion.alpha' = 2.5 is out of range"),
    ({"diffusion": {"reverse_steps": -3}}, "'diffusion.reverse_steps' = -3"),
    ({"training": {"batch_size": "many"}}, "expected int"),
    ({"data": {"dataset": "sas_grid", "n_mixture": 5}}, "perfect square"),
]


@pytest.mark.parametrize(("override", "message"), BAD_CONFIGS)
def test_bad_configs_exit_2_and_write_nothing(tmp_path, monkeypatch, capsys, override, message):
    p = {key: dict(value) if isinstance(value, dict) else value for key, value in TINY.items()}
    for section, values in override.items():
        p[section] = {**p.get(section, {}), **values}
    config = write_config(tmp_path, p)
    assert exit_status("run.py", tmp_path, monkeypatch, "--config", str(config)) == 2
    assert message in capsys.readouterr().err
    assert sorted(path.name for path in tmp_path.iterdir()) == ["tiny.yml"]


def test_every_flag_has_help():
    for script in ("run", "eval"):
        parser = build_parser(script, "test")
        for action in parser._actions:
            if action.option_strings and action.dest != "help":
                assert action.help and len(action.help) > 10, action.option_strings
    assert {f.name for f in FLAGS} >= {
        "--config", "--name", "--method", "--epochs", "--eval", "--check",
        "--train_reverse_steps", "--resume", "--resume_epoch", "--n_max_batch", "--set_seed",
        "--alpha", "--non_iso", "--lploss", "--median", "--generate", "--reverse_steps",
        "--deterministic", "--dlim_eta", "--clip", "--dataset", "--nsamples", "--lr",
        "--batch_size", "--blocks", "--units", "--clamp_a", "--clamp_eps", "--ema_rates",
        "--device", "--log", "--no_progress",
    }  # fmt: skip


def test_flags_set_config_keys():
    from dlpm.cli import build_config

    parser = build_parser("run", "test")
    args = parser.parse_args(
        ["--alpha", "1.5", "--non_iso", "--median", "8", "2", "--clip", "--ema_rates", "0.9",
         "0.99", "--blocks", "3", "--no_progress"]
    )  # fmt: skip
    p = build_config(args, "run")
    assert p["diffusion"]["alpha"] == 1.5
    assert p["diffusion"]["isotropic"] is False
    assert p["loss"]["monte_carlo"] == "median"
    assert (p["loss"]["monte_carlo_outer"], p["loss"]["monte_carlo_inner"]) == (8, 2)
    assert p["sampling"]["clip_denoised"] is True
    assert p["training"]["ema_rates"] == [0.9, 0.99]
    assert p["model"]["mlp"]["nblocks"] == 3
    assert p["run"]["progress"] is False
    args = parser.parse_args(["--clip", "3"])
    assert build_config(args, "run")["sampling"]["clip_denoised"] == 3.0
