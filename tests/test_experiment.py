"""Experiment machinery: resume equality, non-finite losses, EMA, schedules, batches, logs."""

import dataclasses
import json
import math

import pytest
import torch
from torch import nn

import bem.evaluation
from bem.checkpoint import load_checkpoint
from bem.data import TensorBatches
from bem.ema import EMA
from bem.Experiments import Experiment
from bem.Logger import CompositeLogger, DefaultLogger, Logger
from bem.optim import lr_factor
from bem.sections import OptimConfig
from bem.training import NonFiniteLossError
from dlpm.dlpm_experiment import dlpm_init, init_method


def tiny_config(**run) -> dict:
    """A config that trains in well under a second per epoch on one CPU core."""
    return {
        "seed": 3,
        "data": {"dataset": "sas", "std": 0.05, "nsamples": 256, "test_nsamples": 300},
        "diffusion": {"alpha": 1.7, "reverse_steps": 10},
        "sampling": {"reverse_steps": 10},
        "model": {"model_type": "mlp", "mlp": {"nunits": 16, "nblocks": 1, "dropout_rate": 0.1}},
        "training": {"batch_size": 64, "grad_clip": 1.0, "ema_rates": [0.9, 0.99]},
        "optim": {"lr": 1.0e-3, "schedule": "steplr", "warmup": 3, "lr_step_size": 2},
        "eval": {"nsamples": 200, "batch_size": 100, "plot": False, "save_samples": False},
        "run": {"epochs": 4, "progress": False, "device": "cpu", **run},
    }


def make_experiment(path, p, init=None, prepare=True) -> Experiment:
    experiment = Experiment(path, p, init=init or dlpm_init())
    if prepare:
        experiment.prepare()
    return experiment


class NaNAtStep:
    """A method whose loss turns NaN at chosen (1-based) calls: a stand-in for a diverging run."""

    def __init__(self, method, bad_calls):
        self.method = method
        self.bad_calls = set(bad_calls)
        self.calls = 0

    def loss(self, models, x_start, *, generator=None):
        self.calls += 1
        loss = self.method.loss(models, x_start, generator=generator)
        return loss * math.nan if self.calls in self.bad_calls else loss

    def sample(self, models, shape, **kwargs):
        return self.method.sample(models, shape, **kwargs)


def nan_init(bad_calls):
    def build(config, device):
        return NaNAtStep(init_method(config, device), bad_calls)

    return dataclasses.replace(dlpm_init(), init_method=build)


def resumed_against_uninterrupted(tmp_path, config_for):
    """Train 4 epochs in one go and 2 + 2 with a resume; check equal weights and EMAs.

    ``config_for(**run)`` returns the config with the ``run`` overrides. Returns both
    experiments for further checks.
    """
    full = make_experiment(tmp_path / "full", config_for())
    full.run()
    full.terminate()

    first = make_experiment(tmp_path / "split", config_for(epochs=2))
    first.run()
    first.terminate()
    second = make_experiment(tmp_path / "split", config_for())
    assert second.load() == 2
    second.run()
    second.terminate()

    for name, tensor in full.models["default"].state_dict().items():
        assert torch.equal(tensor, second.models["default"].state_dict()[name]), name
    for ema_full, ema_split in zip(full.emas["default"], second.emas["default"], strict=True):
        for (name, a), b in zip(
            ema_full.module.state_dict().items(),
            ema_split.module.state_dict().values(),
            strict=True,
        ):
            assert torch.equal(a, b), f"ema {ema_full.rate} {name}"
    assert full.trainer.state.step == second.trainer.state.step == 16
    return full, second


def test_resume_matches_uninterrupted_run(tmp_path):
    full, second = resumed_against_uninterrupted(tmp_path, tiny_config)
    assert (
        full.optimizers["default"].param_groups[0]["lr"]
        == (second.optimizers["default"].param_groups[0]["lr"])
    )


def test_checkpoint_holds_resolved_config_and_counters(tmp_path):
    experiment = make_experiment(tmp_path / "run", tiny_config(epochs=1))
    experiment.run()
    experiment.terminate()
    state = load_checkpoint(tmp_path / "run" / "checkpoint_1.pt")
    assert state["epoch"] == 1
    assert state["step"] == 4
    assert state["config"] == experiment.p
    assert set(state["rng"]["generators"]) == {"data_order", "noise"}
    assert (tmp_path / "run" / "config.yml").is_file()
    # One epoch has one mean loss; the curve shows its 4 optimizer steps instead.
    assert (tmp_path / "run" / "loss_curve.png").is_file()
    assert len(experiment._step_losses) == 4
    assert math.isclose(sum(experiment._step_losses) / 4, experiment.history["loss"][0])


def test_nonfinite_loss_stops_and_keeps_checkpoint(tmp_path):
    # 4 steps per epoch and a checkpoint every epoch: the 7th loss call is epoch 2, step 7.
    run_dir = tmp_path / "run"
    experiment = make_experiment(run_dir, tiny_config(checkpoint_freq=1), init=nan_init({7}))
    with pytest.raises(NonFiniteLossError, match="epoch 2, step 7"):
        experiment.run()
    experiment.terminate()
    assert sorted(p.name for p in run_dir.glob("checkpoint_*.pt")) == ["checkpoint_1.pt"]
    state = load_checkpoint(run_dir / "checkpoint_1.pt")
    assert state["epoch"] == 1
    assert all(torch.isfinite(t).all() for t in state["models"]["default"].values())


def test_skip_mode_counts_skipped_batches(tmp_path):
    p = tiny_config(epochs=2)
    p["training"]["nonfinite_loss"] = "skip"
    experiment = make_experiment(tmp_path / "run", p, init=nan_init({2, 6, 7}))
    experiment.run()
    experiment.terminate()
    assert experiment.trainer.state.skipped_batches == 3
    assert experiment.trainer.state.step == 8 - 3
    assert all(torch.isfinite(p).all() for p in experiment.models["default"].parameters())
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    skipped = [r["value"] for r in records if r["key"] == "skipped_batches"]
    assert skipped == [1, 2]


def test_evaluation_results_per_epoch_and_ema(tmp_path, monkeypatch):
    # Storage is under test here, so a cheap metric stands in for evaluate_2d (which the CLI
    # tests run for real).
    def mean_norms(real, generated):
        return {"mean_norm_real": real.norm(dim=1).mean().item(), "wasserstein": 0.0}

    monkeypatch.setitem(bem.evaluation._METRICS, "2d", mean_norms)
    experiment = make_experiment(tmp_path / "run", tiny_config(epochs=2, eval_freq=1))
    experiment.run()
    experiment.terminate()
    results = json.loads((tmp_path / "run" / "eval_results.json").read_text())
    assert list(results["epochs"]) == ["1", "2"]
    variants = results["epochs"]["2"]["variants"]
    assert set(variants) == {"model", "ema_0.9", "ema_0.99"}
    assert "wasserstein" in variants["model"]
    assert results["epochs"]["2"]["settings"]["nsamples"] == 200


def test_no_files_before_run(tmp_path):
    experiment = make_experiment(tmp_path / "run", tiny_config())
    experiment.print_parameters()
    assert not (tmp_path / "run").exists()


def test_ema_bias_correction_matches_hand_computation():
    model = nn.Linear(1, 1, bias=False)
    rate = 0.9
    ema = EMA(model, rate, "bias_corrected")
    weights = [2.0, -1.0, 4.0]
    for w in weights:
        with torch.no_grad():
            model.weight.fill_(w)
        ema.update(model)
    # m_n = r m_{n-1} + (1 - r) w_n from m_0 = 0, then divided by 1 - r**n (Adam's correction).
    m = 0.0
    for w in weights:
        m = rate * m + (1 - rate) * w
    expected = m / (1 - rate ** len(weights))
    assert ema.module.weight.item() == pytest.approx(expected, rel=1e-6)
    # Weighted mean of the weights with weights r**(n - k): (0.81*2 - 0.9*1 + 4) / 2.71.
    assert expected == pytest.approx((0.81 * 2 - 0.9 + 4) / 2.71, rel=1e-12)


def test_ema_warmup_matches_hand_computation():
    model = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema = EMA(model, 0.999)  # warmup is the default schedule
    weights = [2.0, -1.0, 4.0]
    for w in weights:
        with torch.no_grad():
            model.weight.fill_(w)
        ema.update(model)
    # Start at the initial weight 1, then decay d_n = min(r, (1 + n) / (10 + n)) at update n.
    average = 1.0
    for n, w in enumerate(weights, start=1):
        decay = min(0.999, (1 + n) / (10 + n))
        average = decay * average + (1 - decay) * w
    assert ema.module.weight.item() == pytest.approx(average, rel=1e-6)
    assert ema.decay(1) == pytest.approx(2 / 11)
    assert ema.decay(10_000) == 0.999


def test_ema_warmup_forgets_early_weights_in_short_runs():
    # 400 updates at rate 0.999: the bias-corrected average still weighs the first update
    # almost like the last; the warmup schedule keeps a window of about 50 updates.
    model = nn.Linear(1, 1, bias=False)
    emas = {schedule: EMA(model, 0.999, schedule) for schedule in ("warmup", "bias_corrected")}
    for n in range(400):
        with torch.no_grad():
            model.weight.fill_(0.0 if n < 200 else 1.0)
        for ema in emas.values():
            ema.update(model)
    assert emas["warmup"].module.weight.item() > 0.99
    assert emas["bias_corrected"].module.weight.item() < 0.6


def test_ema_after_one_update_equals_weights():
    model = nn.Linear(2, 2)
    ema = EMA(model, 0.999)
    ema.update(model)
    for a, b in zip(ema.module.parameters(), model.parameters(), strict=True):
        torch.testing.assert_close(a, b)


def test_ema_state_round_trip():
    model = nn.Linear(2, 2)
    ema = EMA(model, 0.99)
    for _ in range(3):
        with torch.no_grad():
            model.weight.add_(1.0)
        ema.update(model)
    restored = EMA(nn.Linear(2, 2), 0.99)
    restored.load_state_dict(ema.state_dict())
    torch.testing.assert_close(restored.module.weight, ema.module.weight)
    with pytest.raises(ValueError, match="rate"):
        EMA(model, 0.5).load_state_dict(ema.state_dict())
    with pytest.raises(ValueError, match="schedule"):
        EMA(model, 0.99, "bias_corrected").load_state_dict(ema.state_dict())


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"schedule": "none", "warmup": 0}, [1.0, 1.0, 1.0, 1.0]),
        ({"schedule": "none", "warmup": 2}, [0.5, 1.0, 1.0, 1.0]),
        ({"schedule": "steplr", "warmup": 1, "lr_step_size": 2, "lr_gamma": 0.5}, [1, 1, 1, 0.5]),
        ({"schedule": "linear", "warmup": 0, "lr_steps": 4}, [1.0, 0.75, 0.5, 0.25]),
    ],
)
def test_lr_factor(options, expected):
    factor = lr_factor(OptimConfig(**options))
    assert [factor(step) for step in range(4)] == pytest.approx(expected)


def test_tensor_batches_permute_each_epoch():
    data = torch.arange(10.0)[:, None]
    batches = TensorBatches(data, 4, seed=0)
    assert len(batches) == 3
    first = torch.cat(list(batches.epoch()))
    second = torch.cat(list(batches.epoch()))
    assert sorted(first.flatten().tolist()) == list(range(10))
    assert not torch.equal(first, second)
    again = TensorBatches(data, 4, seed=0)
    assert torch.equal(torch.cat(list(again.epoch())), first)


def test_composite_logger_fans_out(tmp_path):
    class Recorder(Logger):
        def __init__(self):
            self.calls = []

        def log(self, key, value, step=None):
            self.calls.append((key, value, step))

    recorder = Recorder()
    default = DefaultLogger(tmp_path, console=False)
    sink = CompositeLogger([default, recorder])
    sink.initialize({"seed": 0})
    sink.set_values({"loss": 0.5, "steps": 4}, step=1)
    sink.log("note", float("nan"))
    sink.stop()
    assert recorder.calls == [
        ("loss", 0.5, 1),
        ("steps", 4, 1),
        ("note", recorder.calls[2][1], None),
    ]
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").open()]
    assert [(r["key"], r["value"], r["step"]) for r in lines] == [
        ("loss", 0.5, 1),
        ("steps", 4, 1),
        ("note", "nan", None),
    ]


def test_evaluate_saves_plots_and_animation(tmp_path):
    p = tiny_config(epochs=1)
    p["eval"].update({"plot": True, "animate": True, "animate_nsamples": 50, "ema": False})
    experiment = make_experiment(tmp_path / "run", p)
    experiment.run()
    experiment.evaluate()
    experiment.terminate()
    for name in (
        "scatter_epoch1_model.png",
        "survival_epoch1_model.png",
        "reverse_epoch1_model.gif",
    ):
        assert (tmp_path / "run" / name).is_file(), name


def test_ddpm_method_trains(tmp_path):
    p = tiny_config(epochs=1)
    p["method"] = "ddpm"
    experiment = make_experiment(tmp_path / "run", p)
    summary = experiment.run()
    experiment.terminate()
    assert math.isfinite(summary["loss"])
    assert experiment.method.process.alpha == 2.0
