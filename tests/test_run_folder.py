"""A fresh run never replaces an earlier run silently; tracker flags reach the config."""

from test_cli import TINY, exit_status, write_config

from dlpm.cli import build_config, build_parser


def test_fresh_run_refuses_existing_run(tmp_path, monkeypatch, capsys):
    config = write_config(tmp_path, TINY)
    args = ("--config", str(config), "--name", "kept", "--epochs", "1", "--no_progress")
    assert exit_status("run.py", tmp_path, monkeypatch, *args) == 0
    checkpoint = tmp_path / "models" / "kept" / "checkpoint_1.pt"
    before = checkpoint.read_bytes()

    assert exit_status("run.py", tmp_path, monkeypatch, *args) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert checkpoint.read_bytes() == before


def test_overwrite_replaces_earlier_run(tmp_path, monkeypatch):
    config = write_config(tmp_path, TINY)
    args = ("--config", str(config), "--name", "replaced", "--epochs", "2", "--no_progress")
    assert exit_status("run.py", tmp_path, monkeypatch, *args, "--eval", "2") == 0
    run_dir = tmp_path / "models" / "replaced"
    assert (run_dir / "scatter_epoch2_model.png").is_file()
    (run_dir / "tb").mkdir()
    (run_dir / "tb" / "events.out.tfevents.old").write_text("old")
    shorter = ("--config", str(config), "--name", "replaced", "--epochs", "1", "--no_progress")
    assert exit_status("run.py", tmp_path, monkeypatch, *shorter, "--overwrite") == 0
    assert (run_dir / "checkpoint_1.pt").is_file()
    # Nothing of the replaced run stays behind to be mistaken for the new one's.
    for name in ("checkpoint_2.pt", "scatter_epoch2_model.png", "samples_epoch2_model.pt", "tb"):
        assert not (run_dir / name).exists(), name


def test_resume_without_checkpoint_exits_2(tmp_path, monkeypatch, capsys):
    config = write_config(tmp_path, TINY)
    args = ("--config", str(config), "--name", "none", "--resume", "--no_progress")
    assert exit_status("run.py", tmp_path, monkeypatch, *args) == 2
    assert "start the run without --resume" in capsys.readouterr().err
    assert not (tmp_path / "models").exists()


def test_input_error_is_the_last_line(tmp_path, monkeypatch, capsys):
    # The resolved config is printed only for valid input, so it never buries the error.
    config = write_config(tmp_path, TINY | {"run": TINY["run"] | {"device": "cuda:99"}})
    assert exit_status("run.py", tmp_path, monkeypatch, "--config", str(config)) == 2
    captured = capsys.readouterr()
    assert "resolved config" not in captured.out
    assert "run.device" in captured.err.strip().splitlines()[-1]


def test_log_without_value_turns_on_configured_tracker(tmp_path):
    parser = build_parser("run", "test")
    config = write_config(tmp_path, TINY | {"logger": {"tracker": "mlflow"}})
    p = build_config(parser.parse_args(["--config", str(config), "--log"]), "run")
    assert p["logger"]["trackers"] == ["mlflow"]
    p = build_config(parser.parse_args(["--config", str(config), "--logger", "tensorboard"]), "run")
    assert p["logger"]["trackers"] == ["tensorboard"]


def test_bad_logger_spec_exits_2(tmp_path, monkeypatch, capsys):
    assert exit_status("run.py", tmp_path, monkeypatch, "--logger", "no such/logger") == 2
    assert "invalid logger" in capsys.readouterr().err
    assert not (tmp_path / "models").exists()


def test_tensorboard_logger_writes_events(tmp_path, monkeypatch, caplog):
    caplog.set_level("INFO")
    config = write_config(tmp_path, TINY)
    args = ("--config", str(config), "--name", "tb", "--epochs", "1", "--no_progress")
    assert exit_status("run.py", tmp_path, monkeypatch, *args, "--logger", "tensorboard") == 0
    events = list((tmp_path / "models" / "tb" / "tb").glob("events.out.tfevents.*"))
    assert events
    assert "tensorboard --logdir models/tb/tb" in caplog.text


def test_one_reverse_step_exits_2(tmp_path, monkeypatch, capsys):
    config = write_config(tmp_path, TINY)
    args = ("--config", str(config), "--reverse_steps", "1", "--no_progress")
    assert exit_status("run.py", tmp_path, monkeypatch, *args) == 2
    assert "--reverse_steps" in capsys.readouterr().err
    assert not (tmp_path / "models").exists()


def test_empty_config_file_exits_2(tmp_path, monkeypatch, capsys):
    empty = tmp_path / "empty.yml"
    empty.write_text("")
    assert exit_status("run.py", tmp_path, monkeypatch, "--config", str(empty)) == 2
    assert "is empty" in capsys.readouterr().err
    assert not (tmp_path / "models").exists()


def test_resume_from_older_epoch_is_refused(tmp_path, monkeypatch, capsys):
    config = write_config(tmp_path, TINY)
    base = ("--config", str(config), "--name", "older", "--no_progress")
    assert exit_status("run.py", tmp_path, monkeypatch, *base, "--epochs", "2", "--check", "1") == 0
    run_dir = tmp_path / "models" / "older"
    before = sorted(p.name for p in run_dir.iterdir())

    resume = ("--epochs", "3", "--resume_epoch", "1")
    assert exit_status("run.py", tmp_path, monkeypatch, *base, *resume) == 2
    assert "--resume" in capsys.readouterr().err
    assert sorted(p.name for p in run_dir.iterdir()) == before


def test_eval_beyond_epochs_names_the_flags(tmp_path, monkeypatch, capsys):
    config = write_config(tmp_path, TINY)
    args = ("--config", str(config), "--name", "short", "--epochs", "1", "--no_progress")
    assert exit_status("run.py", tmp_path, monkeypatch, *args) == 0
    eval_args = ("--name", "short", "--epochs", "1", "--eval", "5", "--no_progress")
    assert exit_status("eval.py", tmp_path, monkeypatch, *eval_args) == 2
    assert "selects no epoch" in capsys.readouterr().err


def test_eval_of_corrupt_checkpoint_exits_2(tmp_path, monkeypatch, capsys):
    config = write_config(tmp_path, TINY)
    args = ("--config", str(config), "--name", "broken", "--epochs", "1", "--no_progress")
    assert exit_status("run.py", tmp_path, monkeypatch, *args) == 0
    checkpoint = tmp_path / "models" / "broken" / "checkpoint_1.pt"
    checkpoint.write_bytes(checkpoint.read_bytes()[:100])
    eval_args = ("--name", "broken", "--epochs", "1", "--no_progress")
    assert exit_status("eval.py", tmp_path, monkeypatch, *eval_args) == 2
    assert "checkpoint_1.pt" in capsys.readouterr().err


def test_eval_rejects_another_method(tmp_path, monkeypatch, capsys):
    config = write_config(tmp_path, TINY)
    args = ("--config", str(config), "--name", "trained", "--epochs", "1", "--no_progress")
    assert exit_status("run.py", tmp_path, monkeypatch, *args) == 0
    eval_args = ("--name", "trained", "--epochs", "1", "--method", "lim", "--no_progress")
    assert exit_status("eval.py", tmp_path, monkeypatch, *eval_args) == 2
    assert "method" in capsys.readouterr().err
