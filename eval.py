"""Evaluate saved checkpoints: ``python eval.py --name NAME [--epochs E] [--eval K] [flags]``.

Evaluates the checkpoints of epochs K, 2K, ... up to E (only E without ``--eval``; the latest
checkpoint without ``--epochs``). The run's own ``config.yml`` is the base config unless
``--config`` is given; flags such as ``--generate`` and ``--reverse_steps`` apply on top.
Invalid input, or a missing checkpoint, exits with status 2 before anything is written.
Results under sampling settings other than the run's own are stored apart from those of
training time, under a label that names the differences (``reverse_steps-25_deterministic-true``).
"""

from __future__ import annotations

import re
import sys

from tqdm.contrib.logging import logging_redirect_tqdm

from bem.checkpoint import CheckpointError, list_checkpoints
from bem.config import load_yaml
from bem.Experiments import Experiment
from bem.sections import bem_sections
from dlpm.cli import (
    USER_INPUT_ERRORS,
    build_config,
    build_parser,
    check_unchanged,
    config_leaves,
    run_folder,
    setup_logging,
)
from dlpm.dlpm_experiment import dlpm_init

# bem sections whose keys change what an evaluation generates; the other bem sections (run,
# logger, training, optim, data) do not.
_SAMPLING_BEM_KEYS = (("eval", "nsamples"), ("eval", "batch_size"))


def settings_label(stored: dict, p: dict) -> str | None:
    """Name the generation settings in which ``p`` differs from the trained run's ``stored``
    config, as ``key-value`` pairs joined by ``_``; ``None`` when none differs."""
    bem_names = set(bem_sections())
    old, new = config_leaves(stored), config_leaves(p)
    parts = []
    for key in sorted(set(old) | set(new)):
        if key[0] in bem_names and key not in _SAMPLING_BEM_KEYS:
            continue
        if old.get(key) != new.get(key):
            value = new.get(key)
            text = str(value).lower() if isinstance(value, bool) else str(value)
            parts.append(f"{key[-1]}-{re.sub(r'[^A-Za-z0-9.+-]', '', text)}")
    return "_".join(parts) or None


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
        experiment = Experiment(run_dir, p, init=dlpm_init())
        label = None
        if stored.is_file():
            trained = load_yaml(stored)
            check_unchanged(trained, experiment.p, "eval")
            label = settings_label(trained, experiment.p)
        experiment.prepare()
    except USER_INPUT_ERRORS as error:
        parser.error(str(error))
    # The config is the run's own, on disk; printing its 90 lines would bury errors.
    print(f"config: {run_dir / 'config.yml'}" + (f" with {label}" if label else ""))

    try:
        with logging_redirect_tqdm():
            for epoch in epochs:
                experiment.load(epoch)
                experiment.evaluate(label=label)
    except CheckpointError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    finally:
        experiment.terminate()
    print(f"evaluated epoch(s) {', '.join(map(str, epochs))}")
    if label:
        print(
            "sampling settings differ from training: results under"
            f" epochs.<epoch>.by_settings.{label} in eval_results.json"
        )
    print(f"results: {run_dir / 'eval_results.json'}")
    print(f"plots and samples: {run_dir}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
