"""Evaluation: generate samples from each model variant, score them, save results and plots.

Results go to ``eval_results.json`` in the run folder, written atomically after each variant::

    {"epochs": {"20": {"settings": {...}, "variants": {"model": {...}, "ema_0.99": {...}},
                       "by_settings": {"reverse_steps-25": {"settings": ..., "variants": ...}}}}}

The first evaluation of an epoch (usually at training time) fills ``settings`` and
``variants``. A later one under other settings (``eval.py --reverse_steps 25``) goes under
``by_settings``, keyed by a label that names what differs from the first (``reverse_steps-25``);
its files carry the label too, so it never replaces the first one's results.

Metrics are chosen by the kind of data: ``"2d"`` uses :func:`bem.metrics.two_d.evaluate_2d`
and ``"image"`` uses :func:`bem.metrics.images.evaluate_images` (Inception metrics only, when
the weights are on disk). A data set may bring its own bound function, which takes precedence
(image data sets bring their classifier and class proportions, see
:class:`bem.datasets.image_data.ImageMetrics`). Other kinds register theirs with
:func:`register_metrics`.

Image evaluations also write every sample as a PNG file into ``samples_epoch<E>_<variant>/``,
a grid of the first 64 samples (``samples_epoch<E>_<variant>.png``) and, with ``animate``, a
strip of the reverse process (``reverse_epoch<E>_<variant>.png``).
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bem.checkpoint import capture_rng_state, restore_rng_state
from bem.config import config_leaves
from bem.files import atomic_write, write_json_atomic
from bem.generation import GeneratedSamples, generate_samples
from bem.Logger import Logger
from bem.protocol import GenerativeMethod
from bem.sections import EvalConfig

logger = logging.getLogger(__name__)

__all__ = ["Evaluator", "load_results", "register_metrics", "settings_label"]

MetricFunction = Callable[[torch.Tensor, torch.Tensor], dict[str, float]]

# Metrics shown in the console line of an evaluation when present; all go to the JSON file.
_HEADLINE = (
    "wasserstein",
    "mmd",
    "msle_norm",
    "f1",
    "prd_f1",
    "nonfinite_gen",
    "max_norm_gen",
    "classifier_fid",
    "classifier_precision",
    "classifier_recall",
    "class_tv",
    "inception_fid",
    "generated_nonfinite",
)


def _evaluate_2d(real: torch.Tensor, generated: torch.Tensor) -> dict[str, float]:
    from bem.metrics.two_d import evaluate_2d

    return evaluate_2d(real, generated)


def _evaluate_images(real: torch.Tensor, generated: torch.Tensor) -> dict[str, float]:
    from bem.metrics.images import evaluate_images

    return evaluate_images(real, generated)


_METRICS: dict[str, MetricFunction] = {"2d": _evaluate_2d, "image": _evaluate_images}

# Samples of an image evaluation whose reverse process is kept for the strip: the history of
# every sample would hold (steps + 1) * N images.
_IMAGE_HISTORY_SAMPLES = 8


def register_metrics(kind: str, function: MetricFunction) -> None:
    """Use ``function(real, generated) -> {name: value}`` to score data of ``kind``."""
    _METRICS[kind] = function


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def settings_label(first: Mapping[str, Any], other: Mapping[str, Any]) -> str:
    """Name the keys in which ``other`` differs from ``first`` as ``key-value`` pairs joined by
    ``_`` (``reverse_steps-25_deterministic-true``), in the order of the nested keys."""
    old, new = config_leaves(dict(first)), config_leaves(dict(other))
    parts = []
    for key in sorted(set(old) | set(new)):
        if old.get(key) != new.get(key):
            value = new.get(key)
            text = str(value).lower() if isinstance(value, bool) else str(value)
            parts.append(f"{key[-1]}-{re.sub(r'[^A-Za-z0-9.+-]', '', text)}")
    # Values that differ only in characters a file name cannot carry still need a name.
    return "_".join(parts) or "other-settings"


def load_results(path: str | Path) -> dict[str, Any]:
    """Read an ``eval_results.json`` file; a missing file gives an empty result set."""
    path = Path(path)
    if not path.is_file():
        return {"epochs": {}}
    with path.open(encoding="utf-8") as handle:
        data = json.load(handle)
    if not isinstance(data, dict) or not isinstance(data.get("epochs"), dict):
        raise ValueError(f"{path} is not an evaluation results file (no 'epochs' mapping)")
    return data


class Evaluator:
    """Score generated samples against held-out real data, per epoch and model variant.

    Args:
        run_dir: the run folder; results and plots are written there.
        reference: held-out real data, shape (M, *item_shape).
        kind: data kind, a key of the metric registry (``"2d"``).
        item_shape: shape of one sample.
        options: the ``eval`` config section.
        sink: logger that receives the metrics and figure paths.
        progress: show the sampler's progress bar.
        metrics: ``(real, generated) -> {name: value}`` used in place of the function
            registered for ``kind``.
    """

    def __init__(
        self,
        run_dir: str | Path,
        reference: torch.Tensor,
        kind: str,
        item_shape: tuple[int, ...],
        options: EvalConfig,
        sink: Logger,
        progress: bool = False,
        metrics: MetricFunction | None = None,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.reference = reference
        self.kind = kind
        self.item_shape = tuple(item_shape)
        self.options = options
        self.sink = sink
        self.progress = progress
        self.metrics = metrics
        self.results_path = self.run_dir / "eval_results.json"
        # Label of the last evaluate() call's settings (None: the epoch's first settings).
        self.last_label: str | None = None

    def evaluate(
        self,
        method: GenerativeMethod,
        variants: Mapping[str, Mapping[str, nn.Module]],
        epoch: int,
        *,
        seed: int,
        nsamples: int | None = None,
        animate: bool | None = None,
        settings: Mapping[str, Any] | None = None,
    ) -> dict[str, dict[str, Any]]:
        """Generate from each variant, score, plot and store the results of ``epoch``.

        Every variant samples with the same noise seed, so their differences come from the
        weights. The global random states are restored afterwards, so evaluating does not
        change the course of training.

        Args:
            method: the method whose sampler runs.
            variants: variant name (``"model"``, ``"ema_0.999"``) to its models.
            epoch: completed training epochs of the weights.
            seed: seed of the sampling noise.
            nsamples: samples per variant (default ``options.nsamples``).
            animate: save a GIF of the reverse process (default ``options.animate``).
            settings: sampling options to store with the results.

        Returns:
            variant name to its metrics (``{"error": message}`` when scoring failed).
        """
        nsamples = nsamples or self.options.nsamples
        animate = self.options.animate if animate is None else animate
        label = self._label(epoch, {"nsamples": nsamples, **(settings or {})})
        self.last_label = label
        saved_rng = capture_rng_state()
        try:
            results = {}
            for variant, models in variants.items():
                results[variant] = self._evaluate_variant(
                    method, variant, models, epoch, seed, nsamples, animate, label
                )
                self._store(epoch, variant, results[variant], settings, nsamples, label)
        finally:
            restore_rng_state(saved_rng)
        return results

    def _label(self, epoch: int, settings: Mapping[str, Any]) -> str | None:
        """Return the label of ``settings`` against the first evaluation stored for ``epoch``.

        Returns ``None`` when the epoch has no evaluation yet, or one with the same settings.
        """
        entry = load_results(self.results_path)["epochs"].get(str(epoch), {})
        first = entry.get("settings")
        # Compared as stored in JSON (tuples become lists).
        new = json.loads(json.dumps(_json_safe(dict(settings))))
        if not first or first == new:
            return None
        return settings_label(first, new)

    def _evaluate_variant(
        self,
        method: GenerativeMethod,
        variant: str,
        models: Mapping[str, nn.Module],
        epoch: int,
        seed: int,
        nsamples: int,
        animate: bool,
        label: str | None,
    ) -> dict[str, Any]:
        first_model = next(iter(models.values()))
        device = next(first_model.parameters()).device
        generator = torch.Generator(device=device).manual_seed(seed)
        history_samples = self.options.animate_nsamples if animate else 0
        if self.kind == "image":
            history_samples = min(history_samples, _IMAGE_HISTORY_SAMPLES)
        generated = generate_samples(
            method,
            models,
            self.item_shape,
            nsamples,
            self.options.batch_size,
            generator=generator,
            history_samples=history_samples,
            progress=self.progress,
        )
        tag = f"epoch{epoch}_{variant}" + (f"_{label}" if label else "")
        if self.options.save_samples:
            with atomic_write(self.run_dir / f"samples_{tag}.pt") as handle:
                torch.save(generated.samples, handle)
        self._plot(generated, variant, epoch, tag, animate)

        metric_function = self.metrics or _METRICS.get(self.kind)
        if metric_function is None:
            logger.warning("no metrics registered for data kind %r; skipped scoring", self.kind)
            return {}
        try:
            metrics = metric_function(self.reference, generated.samples)
        except ValueError as error:
            logger.error("evaluation of %s at epoch %d failed: %s", variant, epoch, error)
            return {"error": str(error)}
        prefix = f"eval/{variant}" + (f"/{label}" if label else "")
        for key, value in metrics.items():
            self.sink.log(f"{prefix}/{key}", value, epoch)
        headline = [f"{k} {metrics[k]:.4g}" for k in _HEADLINE if k in metrics]
        name = f"{variant} ({label})" if label else variant
        logger.info("eval epoch %d %s: %s", epoch, name, " | ".join(headline))
        return metrics

    def _plot(
        self, generated: GeneratedSamples, variant: str, epoch: int, tag: str, animate: bool
    ) -> None:
        if not (self.options.plot or animate or self.kind == "image"):
            return
        from bem import plots

        title = f"{variant}, epoch {epoch}"
        figures = {}
        if self.options.plot and self.kind == "2d":
            figures["scatter"] = self.run_dir / f"scatter_{tag}.png"
            plots.scatter_real_vs_generated(
                self.reference, generated.samples, figures["scatter"], title=title
            )
            figures["survival"] = self.run_dir / f"survival_{tag}.png"
            plots.survival_plot(self.reference, generated.samples, figures["survival"])
        elif self.kind == "image":
            folder = self.run_dir / f"samples_{tag}"
            plots.save_image_files(generated.samples, folder, progress=self.progress)
            logger.info("saved %d PNG files in %s", len(generated.samples), folder)
            if self.options.plot:
                figures["samples"] = self.run_dir / f"samples_{tag}.png"
                plots.image_grid(generated.samples[:64], figures["samples"], nrow=8)
        if animate and generated.history is not None and self.kind == "2d":
            figures["reverse_process"] = self.run_dir / f"reverse_{tag}.gif"
            plots.animate_reverse_process(
                generated.history, figures["reverse_process"], real=self.reference
            )
        elif animate and generated.history is not None and self.kind == "image":
            figures["reverse_process"] = self.run_dir / f"reverse_{tag}.png"
            plots.reverse_process_strip(generated.history, figures["reverse_process"])
        for name, path in figures.items():
            self.sink.log_figure(f"{name}/{variant}", path, epoch)
            logger.info("saved %s", path)

    def _store(
        self,
        epoch: int,
        variant: str,
        metrics: Mapping[str, Any],
        settings: Mapping[str, Any] | None,
        nsamples: int,
        label: str | None,
    ) -> None:
        results = load_results(self.results_path)
        entry = results["epochs"].setdefault(str(epoch), {})
        if label:
            entry = entry.setdefault("by_settings", {}).setdefault(label, {})
        entry["settings"] = {"nsamples": nsamples, **(settings or {})}
        entry.setdefault("variants", {})[variant] = dict(metrics)
        results["epochs"] = dict(sorted(results["epochs"].items(), key=lambda kv: int(kv[0])))
        write_json_atomic(self.results_path, _json_safe(results))
