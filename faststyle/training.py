"""Training a TransformerNet for one artwork: the LightningModule, its callbacks, and ``train()``.

The content targets of each batch are computed once under ``no_grad``; the loss network is not part of
the checkpoint (it is rebuilt from its cached weights), so checkpoints hold only the transformer and
optimizer. Optimisation is manual so that a non-finite loss or gradient never reaches the weights: the run
stops, and the last checkpoint (written every ``checkpoint_every`` steps) stays good.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback, ModelCheckpoint, OnExceptionCheckpoint, Timer, TQDMProgressBar
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger
from pytorch_lightning.utilities import rank_zero_only
from pytorch_lightning.utilities.exceptions import MisconfigurationException
from torch import Tensor

from faststyle.compiling import compiler, new_step
from faststyle.errors import FaststyleError
from faststyle.images import (
    READER_VERSION,
    check_writable,
    load_image,
    save_image,
    sha256_file,
    thumbnail_data_uri,
)
from faststyle.losses import PerceptualLoss, blend_weights
from faststyle.lossnets import get_lossnet
from faststyle.modelfile import hardware
from faststyle.resuming import (
    INTERRUPTED,
    adopt_adam_state,
    check_resumable,
    check_same_lossnet,
    checkpoint_step,
    join_metrics,
    latest_checkpoint,
    read_checkpoint,
    set_metrics_aside,
)
from faststyle.settings import TrainSettings
from faststyle.stability import stability_loss, step_shift
from faststyle.transformer import TransformerNet

log = logging.getLogger("faststyle.training")
# Where Adam's fused kernel runs (and can leave a non-finite step out on the device); a CPU step waits anyway.
FUSED_ADAM_DEVICES = ("cuda",)
# Steps between the host's reads of whether a step was not finite, where the optimizer leaves such steps out.
FINITE_CHECK_EVERY = 25
# Our checkpoints hold the post-step state on purpose (a bad step is never taken, see StyleModule).
warnings.filterwarnings("ignore", message="Using ModelCheckpoint with manual optimization")
warnings.filterwarnings("ignore", message=".*litlogger.*")
warnings.filterwarnings("ignore", message=r".*\.fit\(ckpt_path=")
# A resumed run may checkpoint at another interval; the checkpoint callback's old state does not matter.
warnings.filterwarnings("ignore", message="Be aware that when using `ckpt_path`, callbacks used to create")
warnings.filterwarnings("ignore", message=".*isinstance\\(treespec, LeafSpec\\)")
# The run folder already holds the validation photos; the loggers only ever append their own files to it.
warnings.filterwarnings("ignore", message="Experiment logs directory .* exists and is not empty")


class NonFiniteLoss(FaststyleError):
    pass


class StyleModule(pl.LightningModule):
    """TransformerNet trained against a PerceptualLoss (``normalization="mean"``, see faststyle.losses)."""

    def __init__(self, settings: TrainSettings) -> None:
        super().__init__()
        self.save_hyperparameters({"settings": asdict(settings)})
        self.settings = settings
        self.automatic_optimization = False
        self.net = TransformerNet(settings.width, settings.num_residual)
        self.layer_config = settings.layer_config()
        self.style_images = styles = [load_image(path, settings.resolved_style_size()) for path in settings.styles]
        lossnet = get_lossnet(settings.backbone, weights=settings.lossnet_weights, pooling=settings.pooling,
                              cache=settings.cache)  # fmt: skip
        lossnet.check_size(settings.size, settings.size, self.layer_config.layers, f"a crop of --size {settings.size}",
                           "raise --size")  # fmt: skip
        for path, style in zip(settings.styles, styles, strict=True):
            lossnet.check_size(*style.shape[-2:], list(self.layer_config.style_layers),
                               f"the style image {Path(path).name} at --style-size {settings.resolved_style_size()}",
                               "raise --style-size, or crop the painting nearer to a square")  # fmt: skip
        perceptual = PerceptualLoss(
            lossnet,
            self.layer_config,
            styles,
            style_blend=settings.style_blend,
            content_weight=settings.content_weight,
            style_weight=settings.style_weight,
            tv_weight=settings.tv_weight,
            normalization="mean",
        )
        # Kept out of the module tree: the loss network is frozen and rebuilt, never checkpointed.
        self.__dict__["perceptual"] = perceptual
        self.style_sha256 = [sha256_file(path) for path in settings.styles]
        self.stopped_reason: str | None = None
        self.check_every = 500  # steps between checkpoints, set by train()
        self._non_finite: Tensor | None = None
        self.images_seen = 0
        self.lr_from_step: list[list[float]] = [[0, settings.lr]]  # [first step, lr]; a resumed run may change lr
        self.last_terms: dict[str, Tensor] = {}  # the latest step's loss terms, for the final-loss line
        self.restored = False  # from a checkpoint, until the first step after it
        self.trained_on = ""  # the hardware, taken at the start: the strategy moves the module to the CPU at the end

    @property
    def perceptual(self) -> PerceptualLoss:
        return self.__dict__["perceptual"]

    def balance_style(self, photos: Sequence[Tensor]) -> None:
        """Sets the style weight at which style pulls ``settings.style_balance`` times as hard as content at
        ``photos`` (faststyle.balance)."""
        from faststyle.balance import balanced_style_weight

        balance = self.settings.style_balance
        assert balance is not None
        weight, pull = balanced_style_weight(self.perceptual, photos, self.style_images, balance)
        log.info(
            "style weight %.4g: style pulls %.3g times as hard as content (%.4g per unit weight, the median of %d "
            "photos)", weight, balance, pull, len(photos),
        )  # fmt: skip
        self.settings = replace(self.settings, style_weight=weight)
        self.save_hyperparameters({"settings": asdict(self.settings)})  # what the loggers record, too
        self.perceptual.style_weight = weight

    def _use_channels_last(self) -> bool:
        wanted = self.settings.channels_last
        return self.device.type == "cuda" if wanted is None else wanted

    def on_fit_start(self) -> None:
        # Runs once the strategy has moved the module to its device (``setup`` runs before that).
        self.trained_on = hardware(self.device)
        memory_format = torch.channels_last if self._use_channels_last() else torch.contiguous_format
        self.perceptual.to(self.device, memory_format=memory_format)
        self.net.to(memory_format=memory_format)
        compiled = compiler(self.settings.compile)
        # Compiled callables live outside the module tree so checkpoints keep the plain parameter names.
        self.__dict__["net_fn"] = compiled(self.net)
        self.__dict__["loss_fn"] = compiled(self.perceptual)
        self.__dict__["targets_fn"] = compiled(self.perceptual.content_features)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        # Called once the module is on its device.
        fused = self.device.type in FUSED_ADAM_DEVICES
        return torch.optim.Adam(self.net.parameters(), lr=self.settings.lr, fused=fused)

    def _skips_on_device(self, optimizer: torch.optim.Optimizer) -> bool:
        """Whether a non-finite step is left out by the optimizer on the device (fused Adam's ``found_inf``), so
        that the host need not wait for every step's verdict. Not under a gradient scaler, which sets it itself."""
        return bool(optimizer.defaults.get("fused")) and self._scaler() is None

    def _scaler(self) -> object | None:
        return getattr(self.trainer.precision_plugin, "scaler", None)

    def _finite_check_due(self) -> bool:
        """The steps after which a checkpoint is written, the last step, and every FINITE_CHECK_EVERY steps."""
        upcoming = self.global_step + 1
        every = (self.check_every, FINITE_CHECK_EVERY)
        return upcoming >= self.trainer.max_steps or self.trainer.should_stop or any(upcoming % n == 0 for n in every)

    def _first_non_finite(self, finite: Tensor, total: Tensor, grad_norm: Tensor, losses_finite: Tensor) -> None:
        """Keeps (step, loss, gradient norm, whether every process's loss was finite) of the first step that was not
        finite, on the device."""
        if self._non_finite is None:
            self._non_finite = torch.full((4,), -1.0, dtype=torch.float64, device=total.device)
        first = ~finite & (self._non_finite[0] < 0)
        now = torch.stack([total.detach().double(), grad_norm.detach().double(), losses_finite.double()])
        self._non_finite = torch.where(first, torch.cat([now.new_full((1,), self.global_step), now]), self._non_finite)

    def non_finite_step(self) -> tuple[int, float, float, bool] | None:
        """(step, loss, gradient norm, whether every process's loss was finite) of the first non-finite step the
        device recorded (one read), else None."""
        if self._non_finite is None:
            return None
        step, total, grad_norm, losses_finite = self._non_finite.tolist()
        return (int(step), total, grad_norm, losses_finite > 0) if step >= 0 else None

    def _stop_non_finite(self, step: int, total: float, grad_norm: float, losses_finite: bool = True) -> None:
        # Under DDP the gradients are averaged in the backward pass: one process's NaN loss makes every process's
        # gradients NaN, so a process whose own loss was finite says whose loss it was rather than blame a gradient.
        if not math.isfinite(total):
            reason = f"the loss became {total}"
        elif not losses_finite:
            reason = "the loss of another process was not finite"
        elif not math.isfinite(grad_norm):
            reason = f"a gradient became {grad_norm}"
        else:
            reason = "the gradients of another process were not finite"
        self._stop(f"{reason} at step {step}")

    def losses(self, content: Tensor):
        if self._use_channels_last():
            content = content.contiguous(memory_format=torch.channels_last)
        fns = self.__dict__
        net_fn, loss_fn = fns.get("net_fn", self.net), fns.get("loss_fn", self.perceptual)
        targets = fns.get("targets_fn", self.perceptual.content_features)(content)
        styled = net_fn(content)
        terms = loss_fn(styled, content_features=targets)
        if weight := self.settings.stability_weight:
            # one photo of the batch is enough: with two at batch 2, the model was as steady and as painterly
            shift = step_shift(self.settings.seed, self.global_step)
            terms.others["stability"] = steadiness = stability_loss(net_fn, content[:1], styled[:1], shift)
            terms.total = terms.total + weight * steadiness
        return terms

    def training_step(self, batch: Tensor, batch_idx: int) -> None:
        optimizer = self.optimizers()
        batch = dither_flat(batch)
        if self.settings.compile:
            new_step()
        terms = self.losses(batch)
        optimizer.zero_grad(set_to_none=True)
        self.manual_backward(terms.total)
        grad_norm = torch.nn.utils.get_total_norm([p.grad for p in self.net.parameters() if p.grad is not None])
        # Nothing non-finite may reach the weights. Fused Adam leaves such a step out on the device, and the host
        # reads the verdict only before checkpoints (and every FINITE_CHECK_EVERY steps), instead of waiting for
        # every step's, which leaves the GPU idle while Python prepares the next step.
        verdict = torch.stack([torch.isfinite(terms.total), torch.isfinite(grad_norm)])
        if self._scaler() is not None:  # under 16-mixed, overflowing scaled gradients are the scaler's to skip
            verdict[1] = True
        if self.trainer.world_size > 1 and torch.distributed.is_initialized():
            # the losses differ between processes: all skip, or stop, together (a collective, not a host wait)
            flags = verdict.float()
            torch.distributed.all_reduce(flags, op=torch.distributed.ReduceOp.MIN)
            verdict = flags > 0
        losses_finite, finite = verdict[0], verdict.all()
        if self._skips_on_device(optimizer.optimizer):
            self._first_non_finite(finite, terms.total, grad_norm, losses_finite)
            optimizer.optimizer.found_inf = (~finite).float()
            if self._finite_check_due() and (found := self.non_finite_step()) is not None:
                self._stop_non_finite(*found)
                return
        elif not bool(finite):
            self._stop_non_finite(self.global_step, float(terms.total.detach()), float(grad_norm), bool(losses_finite))
            return
        optimizer.step()
        optimizer.optimizer.found_inf = None  # as GradScaler leaves it: an unfused step would refuse one
        self.images_seen += batch.shape[0] * self.trainer.world_size
        self.last_terms = values = terms.as_tensors()
        # Lightning's log() costs about 1.5 ms of Python a call (cProfile: 19 ms a step for 11 terms; a compiled step
        # at batch 8 took 27 ms in all on an H200), and the loggers write every log_every_n_steps only.
        if self.global_step % self.trainer.log_every_n_steps == 0 or self.trainer.should_stop:
            self.log_dict({f"loss/{k}": v for k, v in values.items()}, on_step=True, batch_size=batch.shape[0])
        if self.trainer.progress_bar_callback is not None:
            self.log("loss", values["total"], prog_bar=True, on_step=True, logger=False, batch_size=batch.shape[0])

    def _stop(self, reason: str) -> None:
        self.stopped_reason = reason
        self.trainer.should_stop = True
        log.error("stopping: %s; the weights were not updated with it", reason)

    def on_train_end(self) -> None:
        if self.stopped_reason is None and (found := self.non_finite_step()) is not None:  # ended between checks
            self._stop_non_finite(*found)
        if self.trainer.world_size > 1 and log.isEnabledFor(logging.DEBUG):  # every process ends with the same weights
            weights = torch.cat([p.detach().float().flatten() for p in self.net.parameters()]).cpu()
            digest = hashlib.sha256(weights.numpy().tobytes())
            log.debug("process %d ends with weights %s", self.trainer.global_rank, digest.hexdigest()[:16])

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["images_seen"] = self.images_seen
        checkpoint["lr_from_step"] = self.lr_from_step
        checkpoint["last_terms"] = {k: float(v) for k, v in self.last_terms.items()}  # the final losses, on --resume
        checkpoint["style_sha256"] = self.style_sha256
        checkpoint["layer_config"] = self.layer_config.to_dict()
        checkpoint["lossnet_sha256"] = self.perceptual.lossnet.weights_sha256

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.images_seen = int(checkpoint.get("images_seen", 0))
        saved_lr = checkpoint.get("hyper_parameters", {}).get("settings", {}).get("lr", self.settings.lr)
        self.lr_from_step = checkpoint.get("lr_from_step") or [[0, saved_lr]]
        self.last_terms = {k: torch.tensor(v) for k, v in checkpoint.get("last_terms", {}).items()}
        self.restored = True

    def on_train_batch_start(self, batch: Tensor, batch_idx: int) -> None:
        if self.restored:
            self.restored = False
            # Lightning counts one batch more when it restores a checkpoint saved within a step (an interruption's):
            # the loggers' step would run one ahead of the training step from here, leaving a gap in metrics.csv
            self.trainer.fit_loop.epoch_loop._batches_that_stepped = self.global_step

    def on_train_start(self) -> None:
        # after Lightning restored a resumed run's optimizer, whose state holds the lr it was trained with
        if self.lr_from_step[-1][1] != self.settings.lr:
            log.info("learning rate %g from step %d (%g before)", self.settings.lr, self.global_step,
                     self.lr_from_step[-1][1])  # fmt: skip
            self.lr_from_step.append([self.global_step, self.settings.lr])
        optimizer = self.optimizers().optimizer
        for group in optimizer.param_groups:  # the wrapped optimizer's: the restored state's
            group["lr"] = self.settings.lr
        if self.restored:
            adopt_adam_state(optimizer)

    @torch.no_grad()
    def stylize(self, photos: Sequence[Tensor]) -> list[Tensor]:
        was_training = self.net.training
        self.net.eval()
        from faststyle.stylize import on_min_side

        dtype = next(self.net.parameters()).dtype  # not float32 under --precision bf16-true and the like
        out = [on_min_side(self.net, p.to(self.device, dtype)).float().clamp(0, 1).cpu() for p in photos]
        self.net.train(was_training)
        return out


def dither_flat(photos: Tensor, amplitude: float = 1e-3) -> Tensor:
    """Photos whose every channel is a single value (a crop of clear sky, a white backdrop) with a diagonal ramp of
    ±``amplitude`` added, the others unchanged. Instance normalisation divides by the spread of its input; on an
    exactly flat photo every layer's spread is nil and the gradients overflow (1e22 and more, then inf), while a
    ramp far below one 8-bit level gives gradients like any photo's (a periodic pattern would not: the stride-2
    convolutions sample a checkerboard flat again). No host synchronisation."""
    flat = (photos.amax(dim=(2, 3)) - photos.amin(dim=(2, 3))).amax(dim=1) == 0
    rows = torch.linspace(-0.5, 0.5, photos.shape[-2], device=photos.device, dtype=photos.dtype).view(-1, 1)
    cols = torch.linspace(-0.5, 0.5, photos.shape[-1], device=photos.device, dtype=photos.dtype).view(1, -1)
    return torch.where(flat.view(-1, 1, 1, 1), (photos + amplitude * (rows + cols)).clamp(0, 1), photos)


class ValidationGrid(Callback):
    """Every ``every`` steps: stylize fixed photos, write ``grid_<step>.png``, log the grid image, and log how near
    the outputs' texture is to the painting's as ``val/texture`` (kept in ``texture``, by step): the mean over the
    photos of each output's texture distance (faststyle.metrics.texture_distance) over its photo's, several paintings
    weighted by their blend; 1 = no nearer than the photo. No loss network computes it, so it shows whether the
    pictures still change when the loss has flattened."""

    def __init__(self, photos: Sequence[Tensor], folder: Path, every: int) -> None:
        self.photos, self.folder, self.every = list(photos), folder, every
        self.texture: dict[int, float] = {}
        self._photo_texture: list[list[float]] | None = None  # [painting][photo]

    @staticmethod
    def grid(photos: Sequence[Tensor], styled: Sequence[Tensor], gap: int = 4) -> Tensor:
        """One row per photo, the photo beside its stylized version, each row as tall as its photo."""
        rows = []
        for photo, image in zip(photos, styled, strict=True):
            rows.append(torch.cat([photo[0], torch.ones(3, photo.shape[-2], gap), image[0]], dim=-1))
        width = max(row.shape[-1] for row in rows)
        canvas = torch.ones(3, sum(row.shape[-2] for row in rows) + gap * (len(rows) + 1), width + 2 * gap)
        top = gap
        for row in rows:
            canvas[:, top : top + row.shape[-2], gap : gap + row.shape[-1]] = row
            top += row.shape[-2] + gap
        return canvas

    def texture_of(self, styled: Sequence[Tensor], module: StyleModule) -> float | None:
        """Over the photos large enough to measure (not a banner a few pixels high); None if none is."""
        from faststyle.metrics import TEXTURE_PATCH, texture_distance

        pairs = [(p, x) for p, x in zip(self.photos, styled, strict=True) if min(p.shape[-2:]) >= TEXTURE_PATCH]
        if not pairs:
            return None
        paintings = [s.cpu() for s in module.style_images]
        if self._photo_texture is None:
            self._photo_texture = [[float(texture_distance(p, s)[0]) for p, _ in pairs] for s in paintings]
        weights = blend_weights(len(paintings), module.settings.style_blend)
        total = 0.0
        for weight, painting, own in zip(weights, paintings, self._photo_texture, strict=True):
            ratios = [
                float(texture_distance(x, painting)[0]) / max(o, 1e-6) for (_, x), o in zip(pairs, own, strict=True)
            ]
            total += weight * sum(ratios) / len(ratios)
        return total

    def write(self, trainer: pl.Trainer, module: StyleModule) -> None:
        if not self.photos or trainer.global_rank != 0:
            return
        styled = module.stylize(self.photos)
        grid = self.grid(self.photos, styled)
        save_image(grid, self.folder / f"grid_{trainer.global_step:06d}.png")
        texture = self.texture_of(styled, module)
        if texture is not None:
            self.texture[trainer.global_step] = texture
        for logger in trainer.loggers:
            if texture is not None:
                logger.log_metrics({"val/texture": texture}, step=trainer.global_step)
            if isinstance(logger, TensorBoardLogger):
                logger.experiment.add_image("validation", grid, trainer.global_step)

    def on_train_batch_end(self, trainer: pl.Trainer, module: pl.LightningModule, *args: Any) -> None:
        if trainer.global_step % self.every == 0:
            self.write(trainer, module)  # type: ignore[arg-type]

    def on_train_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        if trainer.global_step == 0:
            self.write(trainer, module)  # type: ignore[arg-type]

    def on_train_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        if trainer.global_step % self.every and not getattr(module, "stopped_reason", None):
            self.write(trainer, module)  # type: ignore[arg-type]


@dataclass
class TrainResult:
    model_path: Path | None
    run_dir: Path
    steps: int
    seconds: float
    images_per_second: float
    final_losses: dict[str, float]
    skipped_photos: int
    stopped_reason: str | None = None
    rank: int = 0
    world_size: int = 1
    start_step: int = 0  # where this run began: not 0 for a resumed one
    planned_steps: int | None = None  # --steps: more than ``steps`` where --max-minutes ended the run
    val_texture: dict[int, float] = field(default_factory=dict)  # this session's val/texture by step


def runs_on_cpu(accelerator: str) -> bool:
    return accelerator == "cpu" or (accelerator == "auto" and not torch.cuda.is_available())


def default_precision(accelerator: str) -> str:
    return "32-true" if runs_on_cpu(accelerator) else "bf16-mixed"


def train(
    settings: TrainSettings,
    data: str | os.PathLike[str],
    out: str | os.PathLike[str],
    run_dir: str | os.PathLike[str] | None = None,
    resume: bool = False,
    accelerator: str = "auto",
    devices: int | str = "auto",
    strategy: str = "auto",
    num_nodes: int = 1,
    precision: str | None = None,
    num_workers: int | None = None,
    gpu_cache: bool = False,
    stream: bool = False,
    max_minutes: float | None = None,
    val_every: int = 500,
    val_photos: int = 4,
    checkpoint_every: int = 500,
    half: bool = True,
    progress: bool = True,
    data_cache_dir: str | None = None,
    resume_flag: str = "--resume",
) -> TrainResult:
    """Train, then write the model file ``out`` (safetensors + metadata). Interrupted runs resume with ``resume``.

    ``max_minutes`` ends training after that much time (at the step then running) and still writes the model.
    ``resume_flag`` is what the caller's command line adds to continue a stopped run, for the messages that say
    how: "" where running the same command again continues by itself (``faststyle compare``).
    """
    from faststyle.data import PhotoDataModule, data_source
    from faststyle.modelfile import save_model

    out = Path(out)
    if out.suffix != ".safetensors":
        raise FaststyleError(f"--out must end in .safetensors, not {out.name!r}")
    if settings.short_side is not None and settings.short_side < settings.size:
        raise FaststyleError(
            f"--short-side {settings.short_side} is smaller than the crop --size {settings.size}; give at least that"
        )
    if max_minutes is not None and not max_minutes > 0:
        raise FaststyleError(f"--max-minutes must be positive, not {max_minutes}")
    if val_every < 1 or checkpoint_every < 1:
        raise FaststyleError(
            f"--val-every and --checkpoint-every must be 1 or more, not {val_every}, {checkpoint_every}"
        )
    precision = precision or default_precision(accelerator)
    if runs_on_cpu(accelerator) and not precision.startswith(("32", "64")):
        log.warning(
            "--precision %s on the CPU runs several times slower than 32-true (the CPU default); it is meant for GPUs",
            precision,
        )
    if runs_on_cpu(accelerator) and settings.compile and precision.startswith("bf16"):
        # Seen with torch 2.14.1: inductor's CPU code for the transformer gives NaN gradients under bf16 autocast
        # (the same graph through aot_eager is fine).
        raise FaststyleError(
            "torch.compile with bf16 on the CPU gives NaN gradients (a torch inductor bug); "
            "train in fp32 (--precision 32-true) or leave out --compile"
        )
    for style in settings.styles:
        load_image(style)  # an unreadable style image fails here, before anything else
    check_writable(out.parent, "the model file")
    run = Path(run_dir) if run_dir else out.with_suffix("").with_name(out.stem + "_run")
    if (folder := Path(data).expanduser()).is_dir() and folder.resolve() == run.resolve():
        raise FaststyleError(
            f"--run-dir {run} is the --data folder: the run's validation photos and grids would be read back as "
            "training photos; give the run a folder of its own"
        )
    check_writable(run, "the checkpoints and logs (--run-dir)")
    last = run / "checkpoints" / "last.ckpt"
    resume_from = latest_checkpoint(run / "checkpoints")
    saved = read_checkpoint(resume_from) if resume_from is not None else {}
    start_step = int(saved.get("global_step", 0))
    if not resume and resume_from is not None and start_step == 0:
        # left by a run that failed before its first step: nothing to continue
        for stale in (run / "checkpoints").glob("*.ckpt"):
            stale.unlink()
        resume_from = None
    if resume and resume_from is None:
        raise FaststyleError(
            f"nothing to resume: no checkpoint in {run / 'checkpoints'} (train without --resume first)"
        )
    if not resume and resume_from is not None:
        raise FaststyleError(
            f"{run} holds an earlier run; pass --resume to continue it or choose another --out/--run-dir"
        )
    if resume:
        then = saved.get("hyper_parameters", {}).get("settings", {})
        if settings.style_balance is not None and then.get("style_balance") == settings.style_balance:
            settings = replace(settings, style_weight=then["style_weight"])  # measured when the run began
        check_resumable(saved, settings, run, data_source(data))
        if start_step > settings.steps or (start_step == settings.steps and out.exists()):
            raise FaststyleError(
                f"the run in {run} already reached step {start_step} of --steps {settings.steps}; "
                "raise --steps to train it further"
            )
        if start_step == settings.steps:
            log.info("the run in %s reached step %d but has no %s yet: writing it", run, start_step, out.name)
    pl.seed_everything(settings.seed, workers=True, verbose=False)
    datamodule = PhotoDataModule(
        str(data),
        batch_size=settings.batch,
        size=settings.size,
        short_side=settings.short_side,
        seed=settings.seed,
        num_workers=num_workers,
        gpu_cache=gpu_cache,
        cache_dir=data_cache_dir,
        stream=stream,
        start_step=start_step,
        skip=run,
    )
    photos = _some_readable(datamodule.val_photos(val_photos), data) if val_photos else []
    module = StyleModule(settings)  # the loss network loaded after a look at the photos, which may fail sooner
    if resume:
        check_same_lossnet(saved, module.perceptual.lossnet.weights_sha256, run)
    if settings.style_balance is not None and not resume:
        from faststyle.balance import BALANCE_PHOTOS, fit_to

        chosen = _some_readable(datamodule.val_photos(BALANCE_PHOTOS, 2 * settings.size), data)  # not upscaled
        module.balance_style([fit_to(p, settings.size, settings.size) for p in chosen])
        settings = module.settings
    module.check_every = checkpoint_every
    checkpoint = ModelCheckpoint(
        dirpath=run / "checkpoints",
        every_n_train_steps=checkpoint_every,
        save_last=True,
        save_top_k=0,
        enable_version_counter=False,
    )
    callbacks: list[Callback] = [
        checkpoint,
        *([_SessionTimer(timedelta(minutes=max_minutes))] if max_minutes is not None else []),
        _InterruptCheckpoint(run / "checkpoints", filename=INTERRUPTED, start_step=start_step),
        _SharedSkips(checkpoint_every),
        validation := ValidationGrid(photos, run / "val", val_every),
        pace := _Pace(),
    ]
    if progress:
        callbacks.append(_StepBar(refresh_rate=max(1, min(20, settings.steps // 100))))
    trainer = _trainer(
        accelerator=accelerator,
        devices=devices,
        strategy=strategy,
        num_nodes=num_nodes,
        precision=precision,
        max_steps=settings.steps,
        logger=[CSVLogger(run, name="", version=""), TensorBoardLogger(run, name="", version="")],
        callbacks=callbacks,
        enable_progress_bar=progress,
        enable_model_summary=False,
        log_every_n_steps=max(1, min(50, settings.steps // 20)),
        num_sanity_val_steps=0,
        limit_val_batches=0,
        use_distributed_sampler=False,
    )
    run.mkdir(parents=True, exist_ok=True)  # only now: settings Lightning refuses leave nothing behind
    for i, photo in enumerate(photos):
        save_image(photo, run / "val" / f"photo_{i}.png")
    if resume and resume_from is not None:
        log.info("resuming %s from %s at step %d", run, resume_from.name, start_step)
    if resume and rank_zero_only.rank == 0:
        set_metrics_aside(run, start_step)
    continue_with = "continue with the same command" + (f" and {resume_flag}" if resume_flag else "; it resumes there")
    started = time.perf_counter()
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=str(resume_from) if resume else None)
    except (KeyboardInterrupt, SystemExit):
        # Lightning saves <run>/checkpoints/interrupted.ckpt (if a step was taken), then exits on Ctrl-C.
        if trainer.global_step <= start_step:
            again = "the same command" + (f" (with {resume_flag})" if resume and resume_flag else "")
            raise FaststyleError(
                f"interrupted before step {start_step + 1}; nothing was saved: run {again} again"
            ) from None
        raise FaststyleError(f"interrupted at step {trainer.global_step}; {continue_with}") from None
    except FaststyleError as exc:
        raise _from_worker(exc) from None
    finally:
        if rank_zero_only.rank == 0:
            join_metrics(run)
    seconds = time.perf_counter() - started
    if not trainer.interrupted:  # every process ends here: the final checkpoint and the model count all their skips
        share_skipped(trainer, datamodule)
    steps_done = trainer.global_step - start_step
    rate = pace.images_per_second(settings.batch * trainer.world_size)
    if math.isnan(rate) and seconds > 0 and steps_done:  # one step: only the wall time, set-up included, says anything
        rate = steps_done * settings.batch * trainer.world_size / seconds
    final = {k: float(v) for k, v in module.last_terms.items()}
    result = TrainResult(None, run, trainer.global_step, seconds, rate, final, datamodule.skipped)
    result.rank, result.world_size, result.start_step = trainer.global_rank, trainer.world_size, start_step
    result.planned_steps = settings.steps
    result.val_texture = validation.texture
    if module.stopped_reason:
        result.stopped_reason = module.stopped_reason
        good = latest_checkpoint(run / "checkpoints")  # what --resume continues from: an interruption's may be newer
        at = checkpoint_step(good) if good else None
        if not resume_flag:
            advice = (
                "The same command continues from it with other photos; if it stops again at once, another "
                "--style-weight (or --seed) trains a new model instead"
            )
        elif resume and at == start_step == trainer.global_step:  # at once, with other crops: the weights overflow
            advice = (
                "It stopped at the step it resumed at, with other photos than before: the checkpoint's weights "
                "overflow whatever the photo, and no --lr changes that step. Start a new run (another --out or "
                "--run-dir) with a lower --lr or other loss weights"
            )
        else:
            advice = (
                "--resume continues from it with other photos (a rare overflow may not come back; --lr may be "
                "lowered there for the steps after it); if it stops again at once, start a new run (another --out "
                "or --run-dir) with a lower --lr or other loss weights"
            )
        raise NonFiniteLoss(
            f"training stopped: {module.stopped_reason}. The last good checkpoint is {good or last} (step "
            f"{at if good else 'none'}). {advice}"
        )
    if trainer.interrupted:
        raise FaststyleError(f"interrupted; {continue_with} (checkpoint {last})")
    # the final step too (--max-minutes can end between checkpoints); on every rank
    trainer.save_checkpoint(last, weights_only=False)
    if trainer.global_rank == 0:
        net = module.net.to(memory_format=torch.contiguous_format)
        metadata = model_metadata(settings, module, datamodule, data_source(data), trainer.global_step, result)
        save_model(net, out, metadata, half=half)
        result.model_path = out
        log.info("wrote %s", out)
    return result


def _some_readable(photos: list[Tensor], data: str | os.PathLike[str]) -> list[Tensor]:
    """``photos``, read from every photo of ``data`` until enough were: none at all is no set to train on."""
    if not photos:
        raise FaststyleError(f"none of the photos in {data} could be read as an image; check the folder")
    return photos


def _from_worker(error: FaststyleError) -> FaststyleError:
    """A data loader worker's error with its own message: torch raises it again in the main process with the worker's
    traceback as the message."""
    text = str(error).rstrip()
    if not text.startswith("Caught FaststyleError in DataLoader worker"):
        return error
    return FaststyleError(text.rsplit("FaststyleError: ", 1)[-1])


class _Pace(Callback):
    """Training images per second after the first step (which includes the loader's start and any compilation)."""

    def __init__(self) -> None:
        self.first_end: float | None = None
        self.last_end: float | None = None
        self.steps = 0

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        now = time.perf_counter()
        if self.first_end is None:
            self.first_end = now
        else:
            self.steps += 1
        self.last_end = now

    def images_per_second(self, images_per_step: int) -> float:
        if not self.steps or self.first_end is None or self.last_end is None or self.last_end <= self.first_end:
            return math.nan
        return self.steps * images_per_step / (self.last_end - self.first_end)


class _StepBar(TQDMProgressBar):
    """Lightning's bar, counting steps against ``--steps``. Lightning's counts a resumed run's batches from the
    checkpoint's place in the endless epoch against the steps left (612/1200 at step 612 of 1800, at "60 it/s",
    and past its end at 1800/1200); this one shows 612/1800, its speed and time left from this session's steps."""

    def on_train_epoch_start(self, trainer: pl.Trainer, *args: Any) -> None:
        if self._leave:
            self.train_progress_bar = self.init_train_tqdm()
        bar = self.train_progress_bar
        bar.total, bar.initial = trainer.max_steps, trainer.global_step
        bar.n = bar.last_print_n = trainer.global_step
        bar.start_t = bar.last_print_t = time.time()  # tqdm's own clock
        bar.set_description(f"Epoch {trainer.current_epoch}")

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        step = trainer.global_step
        if self._should_update(step, self.train_progress_bar.total):
            self.train_progress_bar.n = step
            self.train_progress_bar.set_postfix(self.get_metrics(trainer, pl_module))


def share_skipped(trainer: pl.Trainer, datamodule: Any) -> None:
    """Every process's unreadable photos marked in every process's skip counter (a collective: all processes call
    it together), so that each skips them, and the checkpoint (written by the first process) and the model file
    count those of the whole run, each once. Each process draws its own photos and finds its own unreadable ones."""
    if trainer.world_size < 2 or not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return
    gathered: list[list[int] | None] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(gathered, datamodule.skipped_marks())
    datamodule.mark_skipped(sorted({slot for slots in gathered for slot in slots or []}))


class _SharedSkips(Callback):
    """Shares the processes' unreadable photos (``share_skipped``) before each checkpoint: Lightning runs checkpoint
    callbacks after the others."""

    def __init__(self, every: int) -> None:
        self.every = every

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        if trainer.global_step % self.every == 0 and trainer.datamodule is not None:
            share_skipped(trainer, trainer.datamodule)


class _SessionTimer(Timer):
    """Lightning's Timer, counting this session only: ``--max-minutes`` of a resumed run starts afresh."""

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        pass


class _InterruptCheckpoint(OnExceptionCheckpoint):
    """Lightning's checkpoint on Ctrl-C or kill, written whole (with the optimizer state, for --resume) as asked,
    rather than by a default that Lightning then announces in the log. Only once this session has taken a step:
    an interruption while a resumed run starts (before Lightning restores the checkpoint) would otherwise write the
    fresh model of step 0 over the interrupted run's checkpoint."""

    def __init__(self, dirpath: Path, filename: str, start_step: int) -> None:
        super().__init__(dirpath, filename)
        self.start_step = start_step

    def on_exception(self, trainer: pl.Trainer, module: pl.LightningModule, *_: Any, **__: Any) -> None:
        if trainer.global_step <= self.start_step:
            return
        trainer.save_checkpoint(self.ckpt_path, weights_only=False)
        found = module.non_finite_step() if isinstance(module, StyleModule) else None
        if found is not None:  # recorded on the device, not yet read by the host
            log.warning(
                "step %d was not finite (loss %s, gradient norm %s); fused Adam left it and any later such steps out",
                *found[:3],
            )


def _trainer(**options: Any) -> pl.Trainer:
    try:
        return pl.Trainer(**options)
    except (MisconfigurationException, ValueError, TypeError, ImportError) as exc:
        settings = ", ".join(f"{k}={options[k]!r}" for k in ("accelerator", "devices", "strategy", "precision"))
        raise FaststyleError(f"Lightning refuses these settings ({settings}): {exc}") from None


def model_metadata(
    settings: TrainSettings, module: StyleModule, datamodule: Any, data: str, steps: int, result: TrainResult
) -> dict[str, Any]:
    styles = []
    for path in settings.styles:
        height, width = load_image(path).shape[-2:]  # upright, as trained on (EXIF orientation applied)
        styles.append({"file": Path(path).name, "sha256": sha256_file(path), "size": [width, height]})
    lossnet = module.perceptual.lossnet
    return {
        "style": {
            "images": styles,
            "blend": module.perceptual.blend,
            "size": settings.resolved_style_size(),
            "reader": READER_VERSION,
            "thumbnail": thumbnail_data_uri(settings.styles),
        },
        "backbone": {"name": settings.backbone, "weights_sha256": lossnet.weights_sha256, "pooling": settings.pooling},
        "layers": module.layer_config.to_dict(),
        "loss": {
            "normalization": "mean",
            "content_weight": settings.content_weight,
            "style_weight": settings.style_weight,
            **({"style_balance": settings.style_balance} if settings.style_balance is not None else {}),
            "tv_weight": settings.tv_weight,
            "stability_weight": settings.stability_weight,
            "final": result.final_losses,
        },
        "training": {
            "steps": steps,
            "batch": settings.batch,
            "processes": result.world_size,
            "size": settings.size,
            "lr": settings.lr,
            "lr_from_step": module.lr_from_step,  # [first step, lr] for each lr the run was trained with
            "seed": settings.seed,
            "images_seen": module.images_seen,
            # the timing, hardware and precision are of the last session (--resume), which ran timed_steps
            "timed_steps": steps - result.start_step,
            "seconds": round(result.seconds, 2),
            "images_per_second": round(rate, 3) if math.isfinite(rate := result.images_per_second) else None,
            "hardware": module.trained_on,
            "precision": str(module.trainer.precision),
        },
        "data": {
            "source": data,
            "images": datamodule.num_images,
            "skipped": datamodule.skipped,
            "short_side": settings.short_side,
        },
    }
