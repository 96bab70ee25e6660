"""Training photos: a local folder or a Hugging Face hub dataset, as endless random crops (B,3,S,S) in [0,1]."""

from __future__ import annotations

import contextlib
import difflib
import glob
import hashlib
import io
import itertools
import logging
import multiprocessing
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pytorch_lightning as pl
import torch
from datasets.distributed import split_dataset_by_node
from datasets.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars
from PIL import Image, UnidentifiedImageError
from torch import Tensor
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from faststyle.errors import FaststyleError
from faststyle.images import PILLOW_READ_ERRORS, frame_total, opened, pil_to_tensor, resize_long_side, to_rgb
from faststyle.photofolders import IMAGE_SUFFIXES, find_images

log = logging.getLogger("faststyle.data")

# Photos whose median short side is this many crops wide get a hint to scale them (--short-side).
LARGE_PHOTOS = 4


def _name_datasets_reads(path: Path) -> bool:
    """Whether ``datasets`` can open a file by this name: fsspec takes ``::`` for a chain of file systems, ``datasets``
    expands environment variables (``$HOME`` …) in paths, and Arrow strings must be UTF-8 (a name from an old archive
    may not be)."""
    name = str(path)
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return "::" not in name and os.path.expandvars(name) == name


def _closest_folder(parent: Path, name: str) -> str | None:
    """The visible folder in ``parent`` one letter or two away from ``name``, if any."""
    folders = [entry.name for entry in parent.iterdir() if entry.is_dir() and not entry.name.startswith(".")]
    close = difflib.get_close_matches(name, folders, n=1, cutoff=0.8)
    return close[0] if close else None


def _refuse_misspelt_folder(source: str) -> None:
    """A name that is not a folder here but is one letter or two away from one is a misspelt folder, not a hub
    dataset: refused at once, where asking the hub would take half a minute of retries offline. So is a path within
    a folder that exists (``photos/trian``) and one of more than two parts, which no hub name (OWNER/NAME) has."""
    if "://" in source:
        return
    parts = [part for part in source.replace(os.sep, "/").split("/") if part]
    parent = Path(source).parent
    if len(parts) > 2 or (len(parts) == 2 and parent.is_dir()):
        if not parent.is_dir():
            raise FaststyleError(
                f"--data {source}: no such folder (nor {parent}/); a dataset on the Hugging Face hub is named "
                "OWNER/NAME, with one '/'"
            )
        close = _closest_folder(parent, Path(source).name)
        hint = f"; did you mean {parent / close}/?" if close else ""
        hub = f" (for a hub dataset {source}, run from a folder without a {parent}/)" if len(parts) == 2 else ""
        raise FaststyleError(f"--data {source}: no such folder in {parent}/{hint}{hub}")
    if "/" in source or os.sep in source:
        return
    close = _closest_folder(Path.cwd(), source)
    if close:
        raise FaststyleError(
            f"--data {source}: no such folder here; did you mean {close}/? For a dataset on the Hugging Face hub, "
            "give its full name OWNER/NAME (e.g. detection-datasets/coco, uoft-cs/cifar10)."
        )


def data_source(source: str | os.PathLike[str]) -> str:
    """How a run names its photos: a folder by its absolute path, a hub dataset by its name."""
    path = Path(source).expanduser()
    return str(path.resolve()) if path.is_dir() else str(source)


def count_images(folder: str | os.PathLike[str]) -> int:
    return len(find_images(folder))


def _rng(*keys: int) -> torch.Generator:
    """A generator seeded from several integers without collisions between, e.g., (seed, worker) pairs."""
    return torch.Generator().manual_seed(int(np.random.SeedSequence(list(keys)).generate_state(1, np.uint64)[0]) >> 1)


def _shard_count(stream: datasets.IterableDataset) -> int:
    return stream.num_shards if hasattr(stream, "num_shards") else stream.n_shards  # datasets 2.19 has only n_shards


def _open(image: dict[str, Any], convert_profile: bool = True, short_side: int | None = None) -> Image.Image:
    """An undecoded ``datasets.Image`` value (path and/or bytes) as an RGB PIL image, its first frame where it has
    several; FaststyleError if unreadable. ``convert_profile=False``: a colour profile is converted later, on the crop
    (see ``to_rgb``). ``short_side``: the photo is to be scaled to that short side, so a JPEG is decoded at the
    smallest of 1/2, 1/4 or 1/8 of its size that is still as large (a 12-MP photo for --short-side 512: 103 → 34 ms)."""
    if image.get("bytes") is None:
        with opened(image["path"]) as pil:
            return _decoded(pil, image["path"], convert_profile, short_side)
    try:
        with Image.open(io.BytesIO(image["bytes"])) as pil:
            return _decoded(pil, image.get("path") or "a streamed photo", convert_profile, short_side)
    except (UnidentifiedImageError, Image.DecompressionBombError, *PILLOW_READ_ERRORS) as exc:
        raise FaststyleError(f"cannot read {image.get('path') or 'an image'} ({exc})") from None


def _decoded(pil: Image.Image, name: str, convert_profile: bool, short_side: int | None) -> Image.Image:
    _note_frames(pil, name)
    if short_side is not None:
        pil.draft(None, _short_side_size(pil.size, short_side))  # JPEG only; other formats decode whole
    pil.load()
    return to_rgb(pil, convert_profile)


_NOTED_FRAMES: set[str] = set()


def _note_frames(image: Image.Image, name: str) -> None:
    """Says once per file (and loader process) that training crops the first frame of an animation or a document of
    several pages, not at every crop."""
    frames = frame_total(image)
    if frames > 1 and image.format != "MPO" and name not in _NOTED_FRAMES:  # a camera's MPO: its photo and a preview
        _NOTED_FRAMES.add(name)
        log.warning("%s has %d frames or pages; training crops the first", name, frames)


def _folder_examples(files: list[str]) -> Iterator[dict[str, Any]]:
    for file in files:
        yield {"image": {"path": file, "bytes": None}}


def _short_side_size(wh: tuple[int, int], short: int) -> tuple[int, int]:
    w, h = wh
    scale = short / min(w, h)
    return max(short, round(w * scale)), max(short, round(h * scale))


def _crop_size(wh: tuple[int, int], size: int, short_side: int | None) -> tuple[int, int]:
    """The photo's size as crops are taken from it: scaled to ``short_side``, or as it is and scaled up to ``size``."""
    return _short_side_size(wh, short_side or max(size, min(wh)))


def _crop_scale(image: Image.Image, size: int, short_side: int | None) -> Image.Image:
    wh = _crop_size(image.size, size, short_side)
    return image if wh == image.size else image.resize(wh, Image.Resampling.BICUBIC)


def _random_crop(image: Image.Image, size: int, short_side: int | None, flip: bool, gen: torch.Generator) -> Tensor:
    """A random size×size crop (3,S,S) in [0,1] of the photo at ``_crop_scale``. Only the crop's part of the photo is
    resampled (a 12-MP photo at --short-side 512: 244 ms a crop when resampled whole; a 6000×3 banner: 2.7 s)."""
    w, h = _crop_size(image.size, size, short_side)
    top = int(torch.randint(h - size + 1, (), generator=gen))
    left = int(torch.randint(w - size + 1, (), generator=gen))
    if (w, h) == image.size:
        image = image.crop((left, top, left + size, top + size))
    else:
        sx, sy = image.width / w, image.height / h
        box = (left * sx, top * sy, (left + size) * sx, (top + size) * sy)
        image = image.resize((size, size), Image.Resampling.BICUBIC, box=box)
    if flip and bool(torch.rand((), generator=gen) < 0.5):
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return pil_to_tensor(image)[0]


@contextlib.contextmanager
def _quiet_datasets() -> Iterator[None]:
    """The ``datasets`` library without its progress bars, as they were afterwards."""
    if are_progress_bars_disabled():
        yield
        return
    disable_progress_bars()
    try:
        yield
    finally:
        enable_progress_bars()


class SkipCounter:
    """Unreadable photos, each counted once, in memory shared with DataLoader worker processes."""

    STREAM_SLOTS = 1 << 20

    def __init__(self, num_items: int | None) -> None:
        self._count = multiprocessing.Value("q", 0)
        # A stream's photos are known by a hash of their path or bytes: its shards are reshuffled between the
        # workers every epoch, so one unreadable photo reaches several workers over a run.
        self._flags = multiprocessing.Array("b", num_items or self.STREAM_SLOTS, lock=False)

    def _slot(self, key: int | str | bytes) -> int:
        return self.slot_of(key, len(self._flags))

    @staticmethod
    def slot_of(key: int | str | bytes, slots: int = STREAM_SLOTS) -> int:
        """The slot of ``key`` among ``slots`` (a stream's counter's, by default)."""
        if isinstance(key, int):
            return key % slots
        digest = hashlib.blake2b(key.encode() if isinstance(key, str) else key, digest_size=8).digest()
        return int.from_bytes(digest, "little") % slots

    def mark(self, key: int | str | bytes, name: str, reason: str) -> None:
        slot = self._slot(key)
        with self._count.get_lock():
            new = not self._flags[slot]
            self._flags[slot] = 1
            if new:
                self._count.value += 1
        if new:
            log.warning("skipping unreadable photo %s: %s", name, reason)

    def is_bad(self, key: int | str | bytes) -> bool:
        return bool(self._flags[self._slot(key)])

    def marked(self) -> list[int]:
        """The slots marked so far (indices of an indexed dataset's photos)."""
        return np.flatnonzero(np.ctypeslib.as_array(self._flags)).tolist()

    def restore(self, slots: list[int]) -> None:
        """Mark ``slots`` found unreadable earlier in the run (before a resume), without warning again."""
        with self._count.get_lock():
            for slot in slots:
                if 0 <= slot < len(self._flags) and not self._flags[slot]:
                    self._flags[slot] = 1
                    self._count.value += 1

    @property
    def count(self) -> int:
        return int(self._count.value)


class _Crops(IterableDataset):
    """Endless random crops of photos, drawn from seeded generators. Unreadable photos are skipped."""

    def __init__(
        self, photos: datasets.Dataset | datasets.IterableDataset, column: str, size: int, short_side: int | None,
        flip: bool, seed: int, rank: int, skips: SkipCounter, batch: int = 1,
    ) -> None:  # fmt: skip
        self.photos, self.column, self.size, self.short_side, self.flip = photos, column, size, short_side, flip
        self.seed, self.rank, self.skips, self.batch = seed, rank, skips, batch
        self.total: int | None = None

    @staticmethod
    def _key(image: dict[str, Any], index: int | None) -> int | str | bytes:
        # a hub dataset's paths are bare names (cat/1.jpg and dog/1.jpg are both 1.jpg): its bytes tell them apart
        return index if index is not None else image.get("bytes") or image.get("path") or b""

    def _crop(self, image: dict[str, Any], index: int | None, gen: torch.Generator) -> Tensor | None:
        """A random crop of ``image``, or None (counted in ``skips``) when it cannot be read."""
        try:
            photo = _open(image, False, self.short_side)  # pil_to_tensor converts the crop's colours
        except FaststyleError as exc:
            name = image.get("path") or (f"#{index}" if index is not None else "a streamed photo with no path")
            self.skips.mark(self._key(image, index), name, str(exc))
            return None
        return _random_crop(photo, self.size, self.short_side, self.flip, gen)


class _FolderCrops(_Crops):
    """Photos of a map-style dataset, drawn with replacement. Each crop has a generator of its own, seeded from its
    place in the run, so that the crops do not depend on the number of loader workers: the DataLoader takes whole
    batches from its workers in turn, so this worker's ``local``-th crop is the run's ``sample``-th."""

    def __iter__(self) -> Iterator[Tensor]:
        worker = get_worker_info()
        workers, worker_id = (worker.num_workers, worker.id) if worker else (1, 0)
        n = len(self.photos)
        for local in itertools.count():
            batch, position = divmod(local, self.batch)
            sample = (batch * workers + worker_id) * self.batch + position
            gen = _rng(self.seed, self.rank, sample)
            while True:
                index = int(torch.randint(n, (), generator=gen))
                if self.skips.is_bad(index):
                    if self.skips.count >= n:
                        raise FaststyleError("none of the training photos could be read; check the folder")
                    continue
                crop = self._crop(self.photos[index][self.column], index, gen)
                if crop is not None:
                    yield crop
                    break


class _StreamCrops(_Crops):
    """Photos of a streamed (hub) dataset, cycled epoch after epoch; one seeded generator per (seed, rank, worker),
    as the workers share the stream's shards between them."""

    def __iter__(self) -> Iterator[Tensor]:
        worker = get_worker_info()
        gen = _rng(self.seed, self.rank, worker.id if worker else 0)
        epoch = 0
        while True:
            self.photos.set_epoch(epoch)
            yielded = False
            for example in self.photos:
                if self.column not in example:
                    raise FaststyleError(
                        f"the dataset has no column {self.column!r} (columns: {sorted(example)}); pass image_column"
                    )
                image = example[self.column]
                if self.skips.count and self.skips.is_bad(self._key(image, None)):
                    continue  # found unreadable before (by another worker, or before a resume)
                crop = self._crop(image, None, gen)
                if crop is not None:
                    yielded = True
                    yield crop
            epoch += 1
            if not yielded:
                if self.total is not None and 0 < self.skips.count < self.total:
                    continue  # this worker's shards held only unreadable photos this time; the next epoch deals anew
                if self.skips.count:
                    raise FaststyleError("none of the streamed training photos could be read; check the data")
                return


class _CacheDraws(IterableDataset):
    """Endless crop positions (index, top, left, flip) into the cached photos; the crop itself happens on device."""

    def __init__(self, shapes: list[tuple[int, int]], size: int, flip: bool, seed: int, rank: int) -> None:
        self.heights = torch.tensor([h for h, _ in shapes])
        self.widths = torch.tensor([w for _, w in shapes])
        self.size, self.flip, self.seed, self.rank = size, flip, seed, rank

    def draw(self, count: int, gen: torch.Generator) -> Tensor:
        index = torch.randint(len(self.heights), (count,), generator=gen)
        top = (torch.rand(count, generator=gen) * (self.heights[index] - self.size + 1)).long()
        left = (torch.rand(count, generator=gen) * (self.widths[index] - self.size + 1)).long()
        flip = (torch.rand(count, generator=gen) < 0.5).long() * int(self.flip)
        return torch.stack([index, top, left, flip], dim=1)

    def __iter__(self) -> Iterator[Tensor]:
        gen = _rng(self.seed, self.rank, 0)
        while True:
            yield from self.draw(256, gen)


class PhotoDataModule(pl.LightningDataModule):
    """Training photos as endless random crops (B,3,size,size) in [0,1], for step-based training (``max_steps``).

    ``source`` is a local folder (every image under it, recursively) or a Hugging Face hub dataset name
    (streamed). Unreadable photos are skipped and counted in ``skipped``. With ``gpu_cache`` every photo is
    decoded once into uint8 tensors on ``device`` and the loader yields crop positions that
    ``on_before_batch_transfer`` (or ``sample_batch``) turns into crops there: the positions stay on the host, so
    cropping needs no device synchronisation, and the crops are already where the step needs them.
    """

    def __init__(
        self,
        source: str | os.PathLike[str],
        batch_size: int = 4,
        size: int = 256,
        flip: bool = True,
        seed: int = 0,
        num_workers: int | None = None,
        short_side: int | None = None,
        image_column: str = "image",
        split: str = "train",
        cache_dir: str | os.PathLike[str] | None = None,
        gpu_cache: bool = False,
        cache_max_gb: float = 4.0,
        device: str | torch.device | None = None,
        val_size: int = 256,
        shuffle_buffer: int = 1000,
        stream: bool = False,
        start_step: int = 0,
        skip: str | os.PathLike[str] | None = None,
    ) -> None:
        """``short_side``: scale every photo so its short side is this before cropping (default: only photos
        smaller than ``size`` are scaled, up to ``size``); the cache holds the photos at that scale, and
        ``cache_max_gb`` bounds its estimated size. ``stream`` reads a local folder
        the way a hub dataset is read (no index is built), for folders too large to index. ``start_step``: the step a
        resumed run starts at, so that it draws new crops rather than those of the steps already taken. ``skip``: a
        folder under ``source`` that holds no photos (the run's own checkpoints and grids). ``image_column``: a hub
        dataset's column of photos; left at ``image``, a dataset without one is read from its one column of images."""
        super().__init__()
        path = Path(source).expanduser()
        self.local = path.is_dir()
        self.source = path if self.local else source
        if not self.local and (path.exists() or str(source).startswith(("/", ".", "~"))):
            what = "is a file, not a folder" if path.exists() else "does not exist"
            raise FaststyleError(f"photo folder {source} {what}; pass a folder of images or a hub dataset name")
        if not self.local:
            _refuse_misspelt_folder(str(source))
        self.streamed = stream or not self.local
        if gpu_cache and self.streamed:
            raise FaststyleError("gpu_cache needs an indexed local photo folder; stream without it")
        self.batch_size, self.size, self.flip, self.seed = batch_size, size, flip, seed
        self.start_step = start_step
        self.skip = skip
        self.num_workers = min(4, os.cpu_count() or 1) if num_workers is None else num_workers
        self.short_side = short_side
        if short_side is not None and short_side < size:
            raise FaststyleError(f"short_side ({short_side}) must be at least the crop size ({size})")
        self.image_column, self.split, self.shuffle_buffer = image_column, split, shuffle_buffer
        self.cache_dir = None if cache_dir is None else str(cache_dir)
        self.gpu_cache = gpu_cache
        self.cache_max_gb = cache_max_gb
        self.device = None if device is None else torch.device(device)
        self.val_size = val_size
        self.photos: datasets.Dataset | datasets.IterableDataset | None = None
        self.cache: list[Tensor] = []
        self._skips: SkipCounter | None = None
        self._draws: _CacheDraws | None = None
        self._files: list[Path] | None = None

    @property
    def num_images(self) -> int | None:
        """Photos found in the folder (None for a hub dataset)."""
        self.setup()
        return len(self._files) if self._files is not None else None

    @property
    def skipped(self) -> int:
        """Photos skipped so far because they could not be read."""
        return self._skips.count if self._skips is not None else 0

    def skipped_marks(self) -> list[int]:
        """The photos skipped so far, as the skip counter's slots: what another process adds with ``mark_skipped``."""
        return self._skips.marked() if self._skips is not None else []

    def mark_skipped(self, slots: list[int]) -> None:
        """Marks the photos another process found unreadable (its ``skipped_marks``), without warning again: each
        process of a multi-process run then skips them too, and ``skipped`` counts them all, each once."""
        if self._skips is not None:
            self._skips.restore(slots)

    def state_dict(self) -> dict[str, Any]:
        """Saved in Lightning's checkpoints: the photos found unreadable, so that a resumed run skips them without
        reading them again and its model's ``skipped`` counts the whole run."""
        if self._skips is None:
            return {}
        marked = self._skips.marked()
        state: dict[str, Any] = {"source": data_source(self.source)}
        if self._files is not None and not self.streamed:
            names = self._file_names()
            return state | {"skipped_files": [names[i] for i in marked]}
        return state | {"skipped_slots": marked}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.setup()
        if self._skips is None:
            return
        if "skipped_files" in state and self._files is not None and not self.streamed:
            index = {name: i for i, name in enumerate(self._file_names())}
            self._skips.restore([index[name] for name in state["skipped_files"] if name in index])
        elif "skipped_slots" in state and self.streamed:
            self._skips.restore(list(state["skipped_slots"]))
        elif self._files is not None:  # a folder read as a stream before the resume and indexed now, or the other way
            keys = [SkipCounter.slot_of(os.path.abspath(f)) for f in self._files]  # a stream's, as ``_load`` names them
            if "skipped_files" in state:
                bad = set(state["skipped_files"])
                self._skips.restore([key for key, name in zip(keys, self._file_names(), strict=True) if name in bad])
            elif "skipped_slots" in state:
                slots = set(state["skipped_slots"])
                self._skips.restore([index for index, key in enumerate(keys) if key in slots])
        if self._skips.count:
            log.info("%d photos found unreadable before the resume are skipped", self._skips.count)

    def _file_names(self) -> list[str]:
        """The indexed photos by their paths within the folder, however the folder itself was named."""
        root = Path(self.source)
        return [path.relative_to(root).as_posix() for path in self._files or []]

    def _crop_seed(self) -> int:
        """The seed of the crop streams: ``seed``, or for a resumed run one drawn from (seed, start_step)."""
        if not self.start_step:
            return self.seed
        return int(np.random.SeedSequence([self.seed, self.start_step]).generate_state(1, np.uint32)[0])

    def _rank(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def setup(self, stage: str | None = None) -> None:
        if self.photos is not None:
            return
        if self.local:
            files: list[Path] = []
            odd: list[Path] = []
            other: list[Path] = []
            for path in find_images(self.source, skip=self.skip, left_out=other):
                (files if _name_datasets_reads(path) else odd).append(path)
            formats = ", ".join(sorted({path.suffix.lower() for path in other}))
            formats_left_out = (
                f"{len(other)} photo(s) in formats training does not read ({formats}) are left out, e.g. "
                f"{', '.join(str(p) for p in other[:3])}; convert them to JPEG or PNG to train on them"
            )
            if other and files:
                log.warning(formats_left_out)
            self._files = files
            if odd:
                log.warning(
                    "leaving out %d photo(s) whose names the datasets library cannot read (with '::' or a $VARIABLE, "
                    "or not UTF-8), "
                    "e.g. %s; rename them to train on them", len(odd), ", ".join(ascii(str(p)) for p in odd[:3]),
                )  # fmt: skip
            if not self._files:
                looked = f"looked for {', '.join(sorted(IMAGE_SUFFIXES))}"
                raise FaststyleError(
                    f"no images under {self.source}: {formats_left_out}"
                    if other
                    else f"no images under {self.source} ({looked})"
                )
            log.info("found %d images under %s", len(self._files), self.source)
            if self.short_side is None:
                self._hint_at_large_photos()
        self._column = "image" if self.local else self.image_column
        if not self.streamed:
            photos = self._load(streaming=False)
            self.photos = photos.cast_column(self._column, datasets.Image(decode=False))
            self._skips = SkipCounter(len(self.photos))
        else:
            photos = self._load(streaming=True)
            if photos.features is not None and self._column not in photos.features:
                self._column = self._only_image_column(photos.features)
            photos = photos.cast_column(self._column, datasets.Image(decode=False)).select_columns([self._column])
            # a resumed run draws another order, or every session of a run in short sessions would see the same photos
            self.photos = photos.shuffle(seed=self._crop_seed(), buffer_size=self.shuffle_buffer)
            self._skips = SkipCounter(None)

    def _only_image_column(self, features: datasets.Features) -> str:
        """A hub dataset's one column of images, where it has no column named ``image_column`` (uoft-cs/cifar10's
        is ``img``): the command line has no option to name it."""
        images = sorted(name for name, feature in features.items() if isinstance(feature, datasets.Image))
        if len(images) == 1 and self.image_column == "image":  # the default, not a column asked for
            log.info("%s has no column %r: training on its image column %r", self.source, self._column, images[0])
            return images[0]
        which = f"its image columns are {', '.join(images)}" if images else "none of them holds images"
        raise FaststyleError(
            f"{self.source} has no column {self._column!r} (columns: {', '.join(sorted(features))}) and {which}; "
            "name the column to train on with PhotoDataModule(image_column=...) in Python, or pick a dataset of photos"
        )

    def _hint_at_large_photos(self, sample: int = 64) -> None:
        """Warns when the photos are so large that a crop of ``size`` shows only a small patch of each."""
        files = self._files or []
        sides = []
        for path in files[:: max(1, len(files) // sample)][:sample]:
            try:
                with opened(path) as image:
                    sides.append(min(image.size))
            except FaststyleError:  # unreadable or over the pixel limit: skipped and counted in training
                continue
        if sides and float(np.median(sides)) >= LARGE_PHOTOS * self.size:
            log.warning(
                "the photos are large (median short side %d px): a %d px crop shows a small patch of each, mostly "
                "flat texture; --short-side %d scales them first, so that crops show whole scenes",
                int(np.median(sides)), self.size, 2 * self.size,
            )  # fmt: skip

    def _load(self, streaming: bool) -> datasets.Dataset | datasets.IterableDataset:
        if self.local and streaming:
            # one shard a file, so that the loader workers share the decoding (imagefolder streams a folder as one)
            return datasets.IterableDataset.from_generator(
                _folder_examples,
                gen_kwargs={"files": [os.path.abspath(f) for f in self._files or []]},  # as a resumed run names them
                features=datasets.Features({"image": datasets.Image(decode=False)}),
            )
        if self.local:
            if len(self._files or []) > 20_000:
                log.info("indexing %d photos (once: datasets caches the index for later runs)", len(self._files or []))
            with _quiet_datasets():  # its bar calls indexing the files here "Downloading data"
                return datasets.load_dataset(
                    "imagefolder",
                    data_files={"train": [glob.escape(str(f)) for f in self._files or []]},  # patterns, not names
                    split="train",
                    drop_labels=True,
                    streaming=streaming,
                    cache_dir=self.cache_dir,
                )
        try:
            return datasets.load_dataset(
                str(self.source), split=self.split, streaming=streaming, cache_dir=self.cache_dir
            )
        except (FileNotFoundError, ConnectionError, OSError, ValueError) as exc:
            raise FaststyleError(
                f"--data {self.source}: not a folder here, and the Hugging Face hub did not provide it "
                f"({type(exc).__name__}: {exc}); pass a folder of photos or a hub dataset name such as "
                "'detection-datasets/coco'"
            ) from None

    def _cache_device(self) -> torch.device:
        trainer = self.trainer
        if self.device is not None:
            return self.device
        if trainer is not None:
            return trainer.strategy.root_device
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")

    def _build_cache(self) -> None:
        paths = [self.photos[i][self._column]["path"] for i in range(len(self.photos))]
        estimate = 0
        for path in paths:
            try:
                with opened(path) as image:
                    w, h = _crop_size(image.size, self.size, self.short_side)
                    estimate += 3 * w * h
            except FaststyleError:  # skipped and counted below
                continue
        if estimate > self.cache_max_gb * 1e9:
            at = f"short side {self.short_side}" if self.short_side else "their own size"
            smaller = round(1.25 * self.size) if self.short_side is None else self.size
            scale = f"scale them down (--short-side {smaller}), " if smaller < (self.short_side or 1e9) else ""
            raise FaststyleError(
                f"caching {len(paths)} photos at {at} takes about {estimate / 1e9:.2g} GB, over the "
                f"{self.cache_max_gb:g} GB allowed; {scale}leave out --gpu-cache, or raise cache_max_gb (Python)"
            )
        device = self._cache_device()

        def load(index: int) -> Tensor | None:
            try:
                photo = _open({"path": paths[index]}, False, self.short_side)
                photo = to_rgb(_crop_scale(photo, self.size, self.short_side))
            except FaststyleError as exc:
                self._skips.mark(index, paths[index], str(exc))
                return None
            return torch.from_numpy(np.asarray(photo, dtype=np.uint8).copy()).permute(2, 0, 1)

        with ThreadPoolExecutor(max(1, self.num_workers)) as pool:
            decoded = [photo for photo in pool.map(load, range(len(paths))) if photo is not None]
        if not decoded:
            raise FaststyleError(f"none of the photos under {self.source} could be read")
        self.cache = [photo.to(device) for photo in decoded]
        log.info("cached %d photos (%.2f GB) on %s", len(self.cache), estimate / 1e9, device)

    def _cached_draws(self) -> _CacheDraws:
        """Crop positions for this process. The cache is built on first use, once the trainer (if any) has put
        this process on its device: in DDP each process caches on its own GPU and draws its own crops."""
        self.setup()
        if not self.cache or not _same_device(self.cache[0].device, self._cache_device()):
            self._build_cache()
        rank, _ = self._rank()
        return _CacheDraws([tuple(p.shape[-2:]) for p in self.cache], self.size, self.flip, self._crop_seed(), rank)

    def train_dataloader(self) -> DataLoader:
        """Called by Lightning once the trainer is set up, so the process's rank and device are known here."""
        self.setup()
        rank, world = self._rank()
        if self.gpu_cache:
            self._draws = self._cached_draws()
            return DataLoader(self._draws, batch_size=self.batch_size)
        photos = self.photos
        if self.streamed and world > 1:
            photos = split_dataset_by_node(photos, rank=rank, world_size=world)
        crops = _StreamCrops if self.streamed else _FolderCrops
        seed = self._crop_seed()
        dataset = crops(
            photos, self._column, self.size, self.short_side, self.flip, seed, rank, self._skips, self.batch_size
        )
        dataset.total = len(self._files) if self.local else None  # photos in all, where known
        workers = self.num_workers
        if self.streamed and workers > (shards := _shard_count(photos)):
            # A stream is split between workers by shards; extra workers would only idle.
            log.info("the stream has %d shard(s): using as many loader workers", shards)
            workers = shards
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            num_workers=workers,
            pin_memory=torch.cuda.is_available(),
            persistent_workers=workers > 0,
        )

    def crop_cached(self, draws: Tensor) -> Tensor:
        """Crops (B,3,S,S) in [0,1], on the cache's device, from rows (index, top, left, flip) of ``draws``."""
        crops = []
        for index, top, left, flip in draws.tolist():
            crop = self.cache[index][:, top : top + self.size, left : left + self.size]
            crops.append(crop.flip(-1) if flip else crop)
        return torch.stack(crops).float().div_(255.0)

    def sample_batch(self, batch_size: int | None = None, generator: torch.Generator | None = None) -> Tensor:
        """A batch of random crops straight from the cache (gpu_cache mode), without a DataLoader."""
        if not self.gpu_cache:
            raise FaststyleError("sample_batch needs gpu_cache=True; iterate train_dataloader() otherwise")
        if self._draws is None:
            self._draws = self._cached_draws()
        gen = generator if generator is not None else _rng(self.seed, self._rank()[0], 1)
        return self.crop_cached(self._draws.draw(batch_size or self.batch_size, gen))

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        if self.gpu_cache and isinstance(batch, Tensor) and batch.dtype == torch.long:
            return self.crop_cached(batch)
        return batch

    def val_photos(self, n: int, val_size: int | None = None) -> list[Tensor]:
        """``n`` fixed photos (1,3,H,W), long side ``val_size``: evenly spread over the folder, or a stream's first."""
        self.setup()
        long_side = val_size or self.val_size
        if isinstance(self.photos, datasets.Dataset):
            total = len(self.photos)
            spread = sorted({round(i * (total - 1) / max(1, n - 1)) for i in range(n)})
            chosen = set(spread)
            order = spread + [i for i in range(total) if i not in chosen]
            images: Iterator[tuple[dict[str, Any], int | None]] = ((self.photos[i][self._column], i) for i in order)
        else:
            stream = self._load(streaming=True).cast_column(self._column, datasets.Image(decode=False))
            images = ((example[self._column], None) for example in stream)
        photos: list[Tensor] = []
        for image, index in images:
            if len(photos) == n:
                break
            try:
                photos.append(resize_long_side(pil_to_tensor(_open(image)), long_side))
            except FaststyleError as exc:  # skipped and counted as training skips it, so that it is not left unsaid
                if self._skips is not None:
                    self._skips.mark(_Crops._key(image, index), image.get("path") or "a streamed photo", str(exc))
        return photos


def _same_device(a: torch.device, b: torch.device) -> bool:
    """``cuda:0`` and ``cuda`` (the current device) alike."""

    def index(device: torch.device) -> int:
        if device.index is not None:
            return device.index
        return torch.cuda.current_device() if device.type == "cuda" and torch.cuda.is_available() else 0

    return a.type == b.type and index(a) == index(b)


__all__ = ["PhotoDataModule", "SkipCounter", "count_images", "find_images"]
