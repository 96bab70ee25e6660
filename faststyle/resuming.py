"""Resuming a training run: its latest checkpoint, whether the settings still match, and its metrics kept whole."""

from __future__ import annotations

import csv
import io
from dataclasses import MISSING, asdict, fields
from pathlib import Path
from typing import Any

import torch

from faststyle.config import layer_weights
from faststyle.errors import FaststyleError
from faststyle.images import atomic_write_bytes, sha256_file
from faststyle.settings import TrainSettings, default_style_size

INTERRUPTED = "interrupted"
METRICS_ASIDE = "metrics.previous.csv"


# Settings a resumed run may change; any other change would make one model of two different trainings.
# Paths among them are checked by what they hold: the style images, the config's layers and weights, and the loss
# network's weights (``check_same_lossnet``).
# ``lr`` is taken up from the step a resumed run starts at (after a loss that went non-finite, say).
RESUMABLE = frozenset(
    {"steps", "lr", "styles", "cache", "lossnet_weights", "compile", "channels_last", "extra", "config"}
)


def _csv_rows(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _write_csv(path: Path, rows: list[dict[str, str]]) -> None:
    keys = sorted(set().union(*rows)) if rows else ["step"]
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, fieldnames=keys)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_bytes(path, buffer.getvalue().encode())


def _logged_before(row: dict[str, str], start_step: int) -> bool:
    """Whether a metrics row was logged before a session that starts at ``start_step``: the losses of step N are
    logged at N (counting from 0), the validation grid drawn after N steps at N (as its file is named), and a resumed
    session draws none at the step it starts at."""
    if not row.get("step", "").isdigit():
        return False
    step = int(row["step"])
    return step < start_step or (step == start_step and all(not v for k, v in row.items() if not _validation(k)))


def _validation(column: str) -> bool:
    return column == "step" or column.startswith("val/")


def set_metrics_aside(run: Path, start_step: int) -> None:
    """Lightning's CSV logger deletes ``metrics.csv`` when it starts: keep the rows of the steps before a resumed run's
    first in ``metrics.previous.csv`` (joined again by ``join_metrics``, also after a run killed before it could)."""
    rows = _csv_rows(run / METRICS_ASIDE) + _csv_rows(run / "metrics.csv")
    kept = [row for row in rows if _logged_before(row, start_step)]
    # a resume killed before Lightning's logger replaced metrics.csv left the rows set aside in both files
    unique = {tuple(sorted(row.items())): row for row in kept}
    _write_csv(run / METRICS_ASIDE, list(unique.values()))


def join_metrics(run: Path) -> None:
    aside = run / METRICS_ASIDE
    if aside.is_file():
        _write_csv(run / "metrics.csv", _csv_rows(aside) + _csv_rows(run / "metrics.csv"))
        aside.unlink()


def read_checkpoint(path: Path) -> dict[str, Any]:
    try:  # our own checkpoint (optimizer state included), not an untrusted file
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - a damaged file fails in pickle, zipfile or torch, each its own way
        # too little memory is no damage: torch's CPU allocator says so in a RuntimeError
        if isinstance(exc, (MemoryError, torch.OutOfMemoryError)) or "can't allocate memory" in str(exc):
            megabytes = path.stat().st_size / 2**20
            raise FaststyleError(
                f"not enough memory to read the checkpoint {path} ({megabytes:.0f} MB on disk); close other programs "
                "and run again"
            ) from None
        checkpoint = exc
    if not isinstance(checkpoint, dict):
        raise FaststyleError(
            f"cannot read the checkpoint {path} ({checkpoint}); it is damaged: move it out of the way (--resume "
            "then continues from the other checkpoints there, if any) or start a new run with another --out/--run-dir"
        )
    return checkpoint


def checkpoint_step(path: Path) -> int:
    return int(read_checkpoint(path).get("global_step", 0))


def check_resumable(checkpoint: dict[str, Any], settings: TrainSettings, run: Path, data: str) -> None:
    saved = checkpoint.get("hyper_parameters", {}).get("settings", {})
    now = asdict(settings)
    balance_then = saved.get("style_balance")  # absent: a run from before --style-weight auto
    weighed = {"style_weight", "style_balance"} if balance_then != settings.style_balance else set()
    # a setting a run from an older version did not record had its default then
    defaults = {f.name: f.default for f in fields(TrainSettings) if f.default is not MISSING}
    saved = {key: value for key, value in defaults.items() if key not in saved} | saved
    for values in (saved, now):  # --style-size left out is 1.5 x --size: the same when given as that
        if values.get("style_size") is None and isinstance(values.get("size"), int):
            values["style_size"] = default_style_size(values["size"])
    changed = [
        f"--{key.replace('_', '-')} {saved[key]!r} then, {now[key]!r} now"
        for key in now
        if key not in RESUMABLE | weighed and key in saved and saved[key] != now[key]
    ]
    if weighed:
        then_weight = f"auto ({balance_then})" if balance_then else saved.get("style_weight")
        now_weight = f"auto ({settings.style_balance})" if settings.style_balance else settings.style_weight
        changed.append(f"--style-weight {then_weight} then, {now_weight} now")
    layers = checkpoint.get("layer_config")
    if layers is None:  # a checkpoint from before the layers were kept: compare the --config given
        if saved.get("config") != now["config"]:
            changed.append(f"--config {saved.get('config')!r} then, {now['config']!r} now")
    elif layer_weights(layers) != layer_weights(settings.layer_config().to_dict()):
        changed.append(f"other layers or layer weights (--config {saved.get('config')!r} then, {now['config']!r} now)")
    hashes = checkpoint.get("style_sha256")
    if hashes is not None and hashes != [sha256_file(path) for path in settings.styles]:
        changed.append("other style images")
    from faststyle.data import PhotoDataModule

    photos = checkpoint.get(PhotoDataModule.__qualname__, {}).get("source")  # Lightning's key for its state_dict
    if photos is not None and photos != data:
        changed.append(f"--data {photos} then, {data} now")
    if changed:
        raise FaststyleError(
            f"the run in {run} was trained with other settings ({'; '.join(changed)}); resume it with the same "
            "settings (only --steps and --lr may change), or start a new run with another --out/--run-dir"
        )


def check_same_lossnet(checkpoint: dict[str, Any], weights_sha256: str | None, run: Path) -> None:
    """The loss network's weights may come from another file or cache, but must be the same weights (a checkpoint
    from before they were recorded is taken as it is)."""
    if "lossnet_sha256" not in checkpoint or checkpoint["lossnet_sha256"] == weights_sha256:
        return
    then, now = (
        f"sha256 {h[:12]}…" if h and len(h) == 64 else str(h) for h in (checkpoint["lossnet_sha256"], weights_sha256)
    )
    raise FaststyleError(
        f"the run in {run} was trained with other loss-network weights ({then} then, {now} now); resume it with the "
        "same --lossnet-weights, or start a new run with another --out/--run-dir"
    )


def latest_checkpoint(folder: Path) -> Path | None:
    """The checkpoint with the most steps: ``last.ckpt`` (also ``last-v1.ckpt`` … from versions that numbered them)
    or the one saved on an interruption."""
    existing = sorted(folder.glob("last*.ckpt")) + sorted(folder.glob(f"{INTERRUPTED}.ckpt"))
    return max(existing, key=checkpoint_step) if existing else None


def adopt_adam_state(optimizer: torch.optim.Optimizer) -> None:
    """Makes a restored Adam state this session's: ``load_state_dict`` brings back the saved run's ``fused`` and
    ``foreach`` choices, its moments' memory layout and its step counters' device, which need not be this device's
    (a run resumed on a GPU after a CPU, or back: unfused Adam refuses fused Adam's ``found_inf``, and fused Adam
    pairs up the wrong elements of moments laid out otherwise than their parameters)."""
    for group in optimizer.param_groups:
        for key in ("fused", "foreach"):
            group[key] = optimizer.defaults.get(key)
        on_device = bool(group.get("fused") or group.get("capturable"))
        for param in group["params"]:
            state = optimizer.state.get(param)
            if not state:
                continue
            for key in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
                if key in state:
                    state[key] = torch.empty_like(param).copy_(state[key])
            state["step"] = torch.tensor(float(state["step"]), device=param.device if on_device else "cpu")
