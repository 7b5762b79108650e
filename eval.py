"""Evaluate saved checkpoints: ``python eval.py --name NAME [--epochs E] [--eval K] [flags]``.

Evaluates the checkpoints of epochs K, 2K, ... up to E (only E without ``--eval``; the latest
checkpoint without ``--epochs``). The run's own ``config.yml`` is the base config unless
``--config`` is given; flags such as ``--generate`` and ``--reverse_steps`` apply on top.
Invalid input, or a missing checkpoint, exits with status 2 before anything is written.
An epoch evaluated before (at training time, usually) keeps those results: an evaluation under
other settings is stored apart, under a label that names the differences
(``deterministic-true_reverse_steps-25``).
"""

from __future__ import annotations

import sys

import yaml
from tqdm.contrib.logging import logging_redirect_tqdm

from bem.checkpoint import CheckpointError, list_checkpoints, load_checkpoint
from bem.config import load_yaml
from bem.Experiments import Experiment
from bem.files import write_text_atomic
from dlpm.cli import (
    USER_INPUT_ERRORS,
    build_config,
    build_parser,
    check_unchanged,
    run_folder,
    setup_logging,
)
from dlpm.dlpm_experiment import dlpm_init


def main(argv: list[str] | None = None) -> int:
    parser = build_parser("eval", "Evaluate the checkpoints of a trained run.")
    args = parser.parse_args(argv)
    setup_logging()
    run_dir = run_folder(args)

    available = list_checkpoints(run_dir)
    if not available:
        parser.error(f"no checkpoint found in {run_dir}; train it first with run.py")
    last = args.epochs if args.epochs is not None else max(available)
    epochs = list(range(args.eval, last + 1, args.eval)) if args.eval else [last]
    if not epochs:
        parser.error(
            f"--eval {args.eval} selects no epoch up to --epochs {last}; use --eval <= {last}"
        )
    missing = [e for e in epochs if e not in available]
    if missing:
        parser.error(
            f"no checkpoint for epoch {', '.join(map(str, missing))} in {run_dir}; available: "
            + ", ".join(str(e) for e in available)
        )

    try:
        stored = run_dir / "config.yml"
        if stored.is_file():
            trained, source = load_yaml(stored), str(stored)
        else:
            # Each checkpoint stores the resolved config of its run.
            trained = load_checkpoint(available[epochs[-1]])["config"]
            source = f"{available[epochs[-1]]} (config.yml is missing)"
        p = build_config(args, "eval", base=trained)
        experiment = Experiment(run_dir, p, init=dlpm_init())
        check_unchanged(trained, experiment.p, "eval")
        experiment.prepare()
        experiment.build_trackers()
    except USER_INPUT_ERRORS as error:
        parser.error(str(error))
    if not stored.is_file():
        write_text_atomic(stored, yaml.safe_dump(trained, sort_keys=False))
    # The run's own config is on disk; printing its 90 lines would bury errors.
    print(f"config: {source}")

    labels: set[str | None] = set()
    try:
        with logging_redirect_tqdm():
            for epoch in epochs:
                experiment.load(epoch)
                experiment.evaluate()
                labels.add(experiment.evaluator.last_label)
    except CheckpointError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "interrupted; the variants evaluated before are saved in eval_results.json",
            file=sys.stderr,
        )
        return 130
    finally:
        experiment.terminate()
    print(f"evaluated epoch{'s' if len(epochs) > 1 else ''} {', '.join(map(str, epochs))}")
    for label in sorted(label for label in labels if label):
        print(
            "settings differ from the epoch's first evaluation: results under"
            f" epochs.<epoch>.by_settings.{label} in eval_results.json"
        )
    print(f"results: {run_dir / 'eval_results.json'}")
    print(f"plots and samples: {run_dir}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
