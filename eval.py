"""Evaluate saved checkpoints: ``python eval.py --name NAME [--epochs E] [--eval K] [flags]``.

Evaluates the checkpoints of epochs K, 2K, ... up to E (only E without ``--eval``; the latest
checkpoint without ``--epochs``). The run's own ``config.yml`` is the base config unless
``--config`` is given; flags such as ``--generate`` and ``--reverse_steps`` apply on top.
Invalid input, or a missing checkpoint, exits with status 2 before anything is written.
"""

from __future__ import annotations

import sys

from tqdm.contrib.logging import logging_redirect_tqdm

from bem.checkpoint import CheckpointError, list_checkpoints
from bem.config import ConfigError, load_yaml
from bem.Experiments import Experiment
from dlpm.cli import USER_INPUT_ERRORS, build_config, build_parser, run_folder, setup_logging
from dlpm.dlpm_experiment import dlpm_init

# Keys that define what was trained: evaluating a checkpoint under other values is meaningless.
TRAINED_KEYS = (("method",), ("diffusion", "alpha"), ("diffusion", "isotropic"))


def _reject_trained_changes(stored: dict, p: dict) -> None:
    for key in TRAINED_KEYS:
        old, new = stored, p
        for part in key:
            old = old.get(part) if isinstance(old, dict) else None
            new = new.get(part) if isinstance(new, dict) else None
        if old != new:
            name = ".".join(key)
            raise ConfigError(
                f"{name} = {new!r} differs from the trained run's {old!r}; evaluate with the"
                " run's own value, or train a new run for the other one"
            )


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
            f"no checkpoint for epoch(s) {missing or [last]} in {run_dir}; available: "
            + ", ".join(str(e) for e in available)
        )

    try:
        stored = run_dir / "config.yml"
        p = build_config(args, "eval", base=stored if stored.is_file() else None)
        if stored.is_file():
            _reject_trained_changes(load_yaml(stored), p)
        experiment = Experiment(run_dir, p, init=dlpm_init())
        experiment.print_parameters()
        experiment.prepare()
    except USER_INPUT_ERRORS as error:
        parser.error(str(error))

    try:
        with logging_redirect_tqdm():
            for epoch in epochs:
                experiment.load(epoch)
                experiment.evaluate()
    except CheckpointError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    finally:
        experiment.terminate()
    print(f"evaluated epoch(s) {', '.join(map(str, epochs))}")
    print(f"results: {run_dir / 'eval_results.json'}")
    print(f"plots and samples: {run_dir}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
