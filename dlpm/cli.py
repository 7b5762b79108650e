"""Command-line flags of ``run.py`` and ``eval.py``, driven by one declarative table.

Each :class:`Flag` names the config key it sets, its argparse type and its help text.
:func:`build_parser` turns the table into an ``argparse`` parser for one script, and
:func:`build_config` loads the YAML config and applies the flags that were given. argparse types
reject malformed values at parse time; the config schema checks every value again.
"""

from __future__ import annotations

import argparse
import copy
import logging
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from bem.checkpoint import CheckpointError
from bem.config import ConfigError, config_leaves, load_yaml, set_by_path
from bem.datasets import available_datasets
from bem.datasets.images import DatasetFilesMissingError
from bem.loggers import check_logger_spec
from dlpm.dlpm_experiment import METHODS

__all__ = [
    "CONFIG_DIR",
    "FLAGS",
    "Flag",
    "MODELS_DIR",
    "build_config",
    "build_parser",
    "config_path",
    "run_folder",
    "setup_logging",
]

CONFIG_DIR = Path(__file__).parent / "configs"
MODELS_DIR = Path("models")
DEFAULT_CONFIG = "2d_data"
DEFAULT_NAME = "default"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def _number(
    kind: type,
    low: float | None = None,
    high: float | None = None,
    open_low: bool = False,
    open_high: bool = False,
):
    """Return an argparse type for ``kind`` values in [low, high].

    ``open_low`` and ``open_high`` exclude the bounds.
    """

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {kind.__name__}, got {text!r}") from None
        below = low is not None and (value <= low if open_low else value < low)
        above = high is not None and (value >= high if open_high else value > high)
        if below or above:
            left = "(" if open_low else "["
            upper = "inf)" if high is None else f"{high:g}{')' if open_high else ']'}"
            raise argparse.ArgumentTypeError(f"{text} is outside {left}{low:g}, {upper}")
        return value

    parse.__name__ = kind.__name__
    return parse


def _plain_name(text: str) -> str:
    if not _NAME.match(text) or ".." in text:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a plain folder name; use letters, digits, '.', '_' and '-',"
            " without '/' or '..'"
        )
    return text


def _logger_spec(text: str) -> str:
    try:
        return check_logger_spec(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


# Errors that mean invalid input (a flag, a config, a data folder, a checkpoint or a tracker
# whose package is missing): run.py and eval.py turn them into one line and exit status 2.
USER_INPUT_ERRORS: tuple[type[Exception], ...] = (
    ConfigError,
    DatasetFilesMissingError,
    CheckpointError,
    FileExistsError,
    ValueError,
    TypeError,
    NotImplementedError,
    ImportError,
)


def _set_clamp(p: dict, name: str, value: float) -> None:
    """Set a noise clamp in the section of the method that runs (``lim`` or ``diffusion``)."""
    section = "lim" if p.get("method") == "lim" else "diffusion"
    set_by_path(p, f"{section}.{name}", value)


def _apply_log(p: dict, value: list[str]) -> None:
    """``--log`` alone turns on the configured tracker; ``--log NAME ...`` names them."""
    trackers = value or [p.get("logger", {}).get("tracker", "tensorboard")]
    set_by_path(p, "logger.trackers", list(trackers))


positive_int = _number(int, 1)
nonnegative_int = _number(int, 0)
positive_float = _number(float, 0.0, open_low=True)


@dataclass(frozen=True)
class Flag:
    """One command-line flag.

    Attributes:
        name: the flag, ``--alpha``.
        key: dotted config key it sets (``diffusion.alpha``), or None for script options.
        help: what it sets and in which unit.
        type: argparse type of the value; None for a switch.
        value: for a switch, the value stored at ``key``.
        nargs, choices, metavar: as in argparse.
        scripts: the scripts that accept the flag.
        apply: sets several keys from the parsed value, in place of ``key``.
    """

    name: str
    key: str | None
    help: str
    type: Callable[[str], Any] | None = None
    value: Any = True
    nargs: str | int | None = None
    choices: Callable[[], list[str]] | None = None
    metavar: str | tuple[str, ...] | None = None
    scripts: tuple[str, ...] = ("run", "eval")
    apply: Callable[[dict, Any], None] | None = None


def _apply_median(p: dict, value: list[int]) -> None:
    set_by_path(p, "loss.monte_carlo", "median")
    set_by_path(p, "loss.monte_carlo_outer", value[0])
    set_by_path(p, "loss.monte_carlo_inner", value[1])


FLAGS: tuple[Flag, ...] = (
    Flag(
        "--config",
        None,
        "config name in dlpm/configs/ or a YAML path (default: 2d_data for run.py, the run's"
        " config.yml for eval.py)",
        str,
    ),
    Flag(
        "--name", None, f"run name; files go to models/NAME/ (default {DEFAULT_NAME})", _plain_name
    ),
    Flag("--method", "method", "generative method", str, choices=lambda: list(METHODS)),
    Flag(
        "--epochs",
        "run.epochs",
        "run.py: training epochs; eval.py: last epoch to evaluate",
        positive_int,
    ),
    Flag(
        "--eval",
        "run.eval_freq",
        "run.py: evaluate every N epochs and always the last one; eval.py: evaluate epochs N,"
        " 2N, ... up to --epochs",
        positive_int,
        metavar="N",
    ),
    Flag(
        "--check",
        "run.checkpoint_freq",
        "save a checkpoint every N epochs (the last one always)",
        positive_int,
        metavar="N",
        scripts=("run",),
    ),
    Flag(
        "--train_reverse_steps",
        "diffusion.reverse_steps",
        "diffusion steps T of training",
        _number(int, 2),
    ),
    Flag(
        "--resume",
        None,
        "continue the run in models/NAME from its latest checkpoint",
        scripts=("run",),
    ),
    Flag(
        "--resume_epoch",
        None,
        "continue the run from the checkpoint of this epoch",
        nonnegative_int,
        scripts=("run",),
    ),
    Flag(
        "--n_max_batch",
        "training.n_max_batch",
        "stop each epoch after N batches",
        positive_int,
        metavar="N",
    ),
    Flag("--set_seed", "seed", "seed of all random streams", nonnegative_int),
    Flag(
        "--alpha",
        "diffusion.alpha",
        "tail index of the noise, in (0, 2]",
        _number(float, 0.0, 2.0, open_low=True),
    ),
    Flag(
        "--non_iso",
        "diffusion.isotropic",
        "non-isotropic noise: one stable factor per coordinate",
        value=False,
    ),
    Flag(
        "--lploss",
        "loss.lploss",
        "p of the Lp loss: 2 root mean square, 1 smooth L1, -1 mean square",
        float,
    ),
    Flag(
        "--median",
        None,
        "median-of-means loss: OUTER draws of A, INNER draws of z each",
        positive_int,
        nargs=2,
        metavar=("OUTER", "INNER"),
        apply=_apply_median,
    ),
    Flag(
        "--generate",
        "eval.nsamples",
        "number of samples generated per evaluation; image samples are also written as PNG"
        " files to models/NAME/samples_epoch<E>_<variant>/",
        positive_int,
        metavar="N",
    ),
    Flag(
        "--reverse_steps",
        "sampling.reverse_steps",
        "reverse steps of the sampler, at least 2",
        _number(int, 2),
    ),
    Flag(
        "--deterministic",
        "sampling.deterministic",
        "DLIM sampler instead of the stochastic one (deterministic unless --dlim_eta > 0)",
    ),
    Flag(
        "--dlim_eta",
        "sampling.dlim_eta",
        "noise level of the DLIM sampler in [0, 1], with --deterministic (0: deterministic)",
        _number(float, 0.0, 1.0),
    ),
    Flag(
        "--clip",
        "sampling.clip_denoised",
        "clip the predicted x_0 at each reverse step to [-1, 1], or to [-C, C]",
        positive_float,
        nargs="?",
        metavar="C",
    ),
    Flag(
        "--dataset",
        "data.dataset",
        "data set name",
        str,
        choices=lambda: list(available_datasets()),
    ),
    Flag(
        "--data_dir",
        "data.data_dir",
        "root folder of the image data sets and of the cached metric classifiers (default:"
        " $DLPM_DATA, else ./data)",
        str,
        metavar="DIR",
    ),
    Flag(
        "--download",
        "data.download",
        "download missing MNIST, CIFAR-10 or CelebA files into the data root",
    ),
    Flag(
        "--image_size",
        "data.image_size",
        "square image size in pixels (image data sets)",
        positive_int,
        metavar="PIXELS",
    ),
    Flag(
        "--nsamples",
        "data.nsamples",
        "number of training points (2D data)",
        positive_int,
        metavar="N",
    ),
    Flag("--lr", "optim.lr", "peak learning rate", positive_float),
    Flag(
        "--batch_size", "training.batch_size", "training examples per optimizer step", positive_int
    ),
    Flag("--blocks", "model.mlp.nblocks", "residual blocks of the MLP", positive_int),
    Flag("--units", "model.mlp.nunits", "hidden units of the MLP", positive_int),
    Flag(
        "--clamp_a",
        "diffusion.clamp_a",
        "clip the stable factor A to [0, value] (sets lim.clamp_a with --method lim)",
        positive_float,
        apply=lambda p, value: _set_clamp(p, "clamp_a", value),
    ),
    Flag(
        "--clamp_eps",
        "diffusion.clamp_eps",
        "clip the noise to [-value, value] (sets lim.clamp_eps with --method lim)",
        positive_float,
        apply=lambda p, value: _set_clamp(p, "clamp_eps", value),
    ),
    Flag(
        "--ema_rates",
        "training.ema_rates",
        "decay rates of the EMA models, in (0, 1)",
        _number(float, 0.0, 1.0, open_low=True, open_high=True),
        nargs="+",
        metavar="RATE",
    ),
    Flag("--device", "run.device", "torch device: auto, cpu, cuda or cuda:N", str),
    Flag("--threads", "run.threads", "CPU threads of torch operations", positive_int),
    Flag(
        "--log",
        "logger.trackers",
        "turn on tracker loggers beside the console and metrics.jsonl log: tensorboard,"
        " mlflow, neptune or module.path:ClassName (without a value: the config's"
        " logger.tracker)",
        _logger_spec,
        nargs="*",
        metavar="TRACKER",
        apply=_apply_log,
    ),
    Flag(
        "--logger",
        "logger.trackers",
        "the tracker logger to use: tensorboard, mlflow, neptune or module.path:ClassName",
        _logger_spec,
        nargs="+",
        metavar="TRACKER",
    ),
    Flag(
        "--overwrite",
        None,
        "let a fresh run replace the checkpoints and results of an earlier run of the same name",
        scripts=("run",),
    ),
    Flag("--no_progress", "run.progress", "hide the progress bars", value=False),
    Flag(
        "--animate",
        "eval.animate",
        "save the reverse process at each evaluation: a GIF for 2D data, a PNG strip of a few"
        " samples at evenly spaced steps for images",
    ),
)


class _Parser(argparse.ArgumentParser):
    """An argparse parser whose errors are one line: the usage text would bury the message."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser(script: str, description: str) -> argparse.ArgumentParser:
    """Build the argparse parser of ``script`` (``"run"`` or ``"eval"``) from :data:`FLAGS`."""
    parser = _Parser(description=description)
    for flag in FLAGS:
        if script not in flag.scripts:
            continue
        kwargs: dict[str, Any] = {"help": flag.help, "default": None}
        if flag.type is None:
            kwargs["action"] = "store_true"
            kwargs["default"] = False
        else:
            kwargs["type"] = flag.type
            if flag.nargs is not None:
                kwargs["nargs"] = flag.nargs
            if flag.nargs == "?":
                kwargs["const"] = True
            if flag.choices is not None:
                kwargs["choices"] = flag.choices()
            if flag.metavar is not None:
                kwargs["metavar"] = flag.metavar
        parser.add_argument(flag.name, **kwargs)
    return parser


def config_path(name_or_path: str) -> Path:
    """Resolve ``--config``: a path to a YAML file, or a name in ``dlpm/configs/``.

    Raises:
        ConfigError: if neither exists.
    """
    path = Path(name_or_path)
    if path.is_dir():
        raise ConfigError(f"--config {name_or_path} is a folder; give a YAML file or a name")
    if path.suffix in (".yml", ".yaml") or path.parent != Path("."):
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        return path
    candidate = CONFIG_DIR / f"{name_or_path}.yml"
    if not candidate.is_file():
        names = ", ".join(sorted(p.stem for p in CONFIG_DIR.glob("*.yml")))
        raise ConfigError(f"no config named {name_or_path!r} in {CONFIG_DIR}; available: {names}")
    return candidate


def run_folder(args: argparse.Namespace) -> Path:
    """Return ``models/<name>`` for the parsed arguments."""
    return MODELS_DIR / (args.name or DEFAULT_NAME)


def build_config(
    args: argparse.Namespace, script: str, base: Path | Mapping[str, Any] | None = None
) -> dict:
    """Load the config of ``--config`` (or ``base``, a file or a config dict, or the default)
    and apply the flags given.

    Raises:
        ConfigError: if the config file is missing or invalid YAML.
    """
    if args.config is None and isinstance(base, Mapping):
        p = copy.deepcopy(dict(base))
    elif args.config is not None:
        p = load_yaml(config_path(args.config))
    else:
        p = load_yaml(base if base is not None else config_path(DEFAULT_CONFIG))
    if getattr(args, "log", None) is not None and getattr(args, "logger", None) is not None:
        raise ConfigError("--log and --logger both choose trackers; pass only one")
    for flag in FLAGS:
        if script not in flag.scripts:
            continue
        parsed = getattr(args, flag.name.lstrip("-"))
        if parsed is None or parsed is False:
            continue
        if flag.apply is not None:
            flag.apply(p, parsed)
        elif flag.key is not None:
            set_by_path(p, flag.key, flag.value if flag.type is None else parsed)
    if not sys.stderr.isatty() and isinstance(p.get("run", {}), dict):
        # Progress bars redrawn into a file or a pipe fill it with hundreds of lines.
        p.setdefault("run", {})["progress"] = False
    return p


# Keys eval.py may change: how samples are drawn and scored, and where files and data are. Any
# other difference from the trained run's config would evaluate a model that was never trained.
EVAL_MUTABLE_KEYS = (
    ("sampling",),
    ("eval",),
    ("run",),
    ("logger",),
    ("diffusion", "clamp_a"),
    ("diffusion", "clamp_eps"),
    ("lim",),
    ("data", "data_dir"),
    ("data", "download"),
    ("data", "num_workers"),
)
# Keys that define a run's model and process, which a resumed run keeps. The optimizer and
# its schedule continue from the checkpoint's state, so optim keys are kept as well.
RESUME_FIXED_KEYS = (("method",), ("diffusion",), ("model",), ("data",), ("seed",), ("optim",))


def _under(key: tuple[str, ...], prefixes: Sequence[tuple[str, ...]]) -> bool:
    return any(key[: len(prefix)] == prefix for prefix in prefixes)


def check_unchanged(stored: Mapping[str, Any], p: Mapping[str, Any], script: str) -> None:
    """Reject values of ``p`` that a resumed run (``script="run"``) or an evaluation
    (``"eval"``) may not change from the run's stored config ``stored``.

    Keys missing from either side (a config written by another version) are not compared.

    Raises:
        ConfigError: naming the first changed key, both values and the fix.
    """
    old, new = config_leaves(dict(stored)), config_leaves(dict(p))
    for key in sorted(set(old) & set(new)):
        if old[key] == new[key]:
            continue
        if script == "eval" and not _under(key, EVAL_MUTABLE_KEYS):
            fix = "eval.py evaluates the model as trained; drop the flag or --config"
        elif (
            script == "run"
            and _under(key, RESUME_FIXED_KEYS)
            and not _under(key, EVAL_MUTABLE_KEYS)
        ):
            fixed_part = "optimizer state" if key[0] == "optim" else "model and data"
            fix = f"a resumed run keeps its {fixed_part}; drop the flag, or train a new --name"
        else:
            continue
        raise ConfigError(
            f"{'.'.join(key)} = {new[key]!r} differs from the trained run's {old[key]!r}; {fix}"
        )


def setup_logging() -> None:
    """Send library log records at INFO and above to stdout, one message per line."""
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
