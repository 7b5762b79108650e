"""Train a model: ``python run.py [--config NAME] [--name NAME] [flags]``; see ``--help``.

Without flags, trains the default 2D config into ``models/default/``. Invalid input exits with
status 2 before anything is written; a non-finite loss exits with status 1.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tqdm.contrib.logging import logging_redirect_tqdm

from bem.checkpoint import CheckpointError, list_checkpoints
from bem.config import ConfigError, load_yaml
from bem.Experiments import Experiment
from bem.training import NonFiniteLossError
from dlpm.cli import (
    USER_INPUT_ERRORS,
    build_config,
    build_parser,
    check_unchanged,
    run_folder,
    setup_logging,
)
from dlpm.dlpm_experiment import dlpm_init


def _reject_older_resume(experiment: Experiment) -> None:
    """Refuse to continue from a checkpoint older than the run's latest one.

    Training on would write new checkpoints beside later ones from the first history, and a
    later --resume would pick those up.
    """
    later = sorted(e for e in list_checkpoints(experiment.run_dir) if e > experiment.epoch)
    if later:
        raise CheckpointError(
            f"{experiment.run_dir} has checkpoints after epoch {experiment.epoch}"
            f" ({', '.join(map(str, later))}); continue from the latest with --resume, or copy"
            " the run to a new --name and delete the later checkpoints there"
        )


def _check_resume_flags(args: argparse.Namespace, run_dir: Path) -> None:
    """Reject --resume without a checkpoint, or with --overwrite."""
    if args.overwrite:
        raise ConfigError("--resume continues a run and --overwrite replaces it; pass only one")
    available = list_checkpoints(run_dir)
    if not available:
        raise CheckpointError(
            f"--resume: no checkpoint in {run_dir}; start the run without --resume"
        )


def main(argv: list[str] | None = None) -> int:
    parser = build_parser("run", "Train a DLPM (or DDPM) model and evaluate it on schedule.")
    args = parser.parse_args(argv)
    setup_logging()
    resume = args.resume or args.resume_epoch is not None

    # Every check of the input runs here, before the first file is written.
    try:
        run_dir = run_folder(args)
        stored = run_dir / "config.yml"
        if resume:
            _check_resume_flags(args, run_dir)
        # A resumed run starts from its own config unless --config names another.
        base = stored if resume and stored.is_file() else None
        p = build_config(args, "run", base=base)
        experiment = Experiment(run_dir, p, init=dlpm_init(), overwrite=args.overwrite)
        if resume and stored.is_file():
            check_unchanged(load_yaml(stored), experiment.p, "run")
        experiment.prepare()
        if resume:
            experiment.load(args.resume_epoch)
            _reject_older_resume(experiment)
            trained, epochs = experiment.epoch, experiment.config.run.epochs
            if epochs <= trained:
                raise ConfigError(
                    f"run.epochs = {epochs} does not exceed the {trained} epochs already"
                    f" trained; pass --epochs above {trained} to train on, or evaluate with"
                    " eval.py"
                )
        experiment.check_run_folder()
        experiment.build_trackers(experiment.epoch + 1 if resume else None)
    except USER_INPUT_ERRORS as error:
        parser.error(str(error))
    # Printed once the input is known to be valid, so that an error is the last line shown.
    experiment.print_parameters()

    try:
        with logging_redirect_tqdm():
            summary = experiment.run()
    except NonFiniteLossError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        saved = list_checkpoints(experiment.run_dir)
        where = f"epoch {max(saved)}" if saved else "the start (no checkpoint yet)"
        evaluated = experiment.evaluating_epoch
        if evaluated is not None:
            name = experiment.run_dir.name
            print(
                f"interrupted while evaluating epoch {evaluated}, whose checkpoint is saved;"
                f" evaluate it with: python eval.py --name {name} --epochs {evaluated}",
                file=sys.stderr,
            )
        else:
            print(f"interrupted during epoch {experiment.epoch + 1}", file=sys.stderr)
        print(f"--resume continues training from {where}", file=sys.stderr)
        return 130
    finally:
        experiment.terminate()

    run_dir = summary["run_dir"]
    loss = "n/a" if summary["loss"] is None else f"{summary['loss']:.4g}"
    print(f"trained {summary['epoch']} epochs ({summary['step']} steps), last loss {loss}")
    if summary["checkpoint"] is None:
        print(f"checkpoint: none written, {summary['epoch']} epochs were already completed")
    else:
        print(f"checkpoint: {summary['checkpoint']}")
    print(f"metrics:    {run_dir / 'metrics.jsonl'}, {run_dir / 'losses.json'}")
    if summary["eval"] is not None:
        print(f"evaluation: {run_dir / 'eval_results.json'}")
        print(f"plots and samples: {run_dir}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
