import itertools
import logging
import multiprocessing
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SHARED
from PIL import Image

from faststyle import data
from faststyle.data import PhotoDataModule, SkipCounter, _shard_count, count_images
from faststyle.errors import FaststyleError
from faststyle.images import open_image, pil_to_tensor

SMALL = "imagenet_sample/n01871265_tusker.jpg"  # 75×56
GREY = "imagenet_sample/n04532670_viaduct.jpg"  # grey content stored as an RGB JPEG
PHOTOS = ["bsds500/test_100007.jpg", "unsplash/alfred-schrock-shoE2y51uX0-unsplash.jpg", "urban100/img_001.jpg"]


@pytest.fixture(scope="session")
def train_dir() -> Path:
    shared = SHARED
    if not (shared / "data" / "train").is_dir():
        pytest.fail(f"{shared}/data/train is missing: the data tests need the shared photos next to the checkout")
    return shared / "data" / "train"


def module(source: Path | str, cache: Path, **options) -> PhotoDataModule:
    options = {"num_workers": 0, "batch_size": 4, "size": 64, **options}
    return PhotoDataModule(source, cache_dir=cache / "hf", **options)


def take(dm: PhotoDataModule, batches: int) -> list[torch.Tensor]:
    loader = iter(dm.train_dataloader())
    return [next(loader) for _ in range(batches)]


def test_whole_training_folder(
    train_dir: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert count_images(train_dir) == 1710
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "photos").symlink_to(train_dir)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    dm = module("~/photos", tmp_path, batch_size=3, size=96)  # as a quoted --data '~/photos' gives it
    with caplog.at_level(logging.INFO, logger="faststyle.data"):
        assert dm.num_images == 1710
    assert "found 1710 images" in caplog.text
    assert "Downloading" not in capfd.readouterr().err  # datasets' bar for indexing local files, left out
    for batch in take(dm, 2):
        assert batch.shape == (3, 3, 96, 96) and batch.dtype == torch.float32
        assert batch.min() >= 0 and batch.max() <= 1 and batch.std() > 0.01
    assert dm.skipped == 0


def make_odd_photos(train_dir: Path, folder: Path) -> dict[str, Path]:
    """Real photos in the modes a user folder may hold."""
    folder.mkdir()
    base = Image.open(train_dir / PHOTOS[0])
    files = {"small": folder / "small.jpg", "grey_rgb": folder / "grey_rgb.jpg"}
    shutil.copy(train_dir / SMALL, files["small"])
    shutil.copy(train_dir / GREY, files["grey_rgb"])
    for mode, suffix in [("L", ".jpg"), ("P", ".png"), ("RGBA", ".png"), ("CMYK", ".jpg")]:
        files[mode] = folder / f"{mode}{suffix}"
        base.convert(mode).save(files[mode])
    return files


@pytest.mark.parametrize("kind", ["small", "grey_rgb", "L", "P", "RGBA", "CMYK"])
def test_odd_photos_become_rgb_crops(train_dir: Path, tmp_path: Path, kind: str) -> None:
    files = make_odd_photos(train_dir, tmp_path / "all")
    with Image.open(files[kind]) as image:
        assert image.mode == ("RGB" if kind in ("small", "grey_rgb") else kind)
        if kind == "small":
            assert min(image.size) < 256
    single = tmp_path / "one"
    single.mkdir()
    shutil.copy(files[kind], single)
    (batch,) = take(module(single, tmp_path, size=256, batch_size=2), 1)
    assert batch.shape == (2, 3, 256, 256)
    assert batch.min() >= 0 and batch.max() <= 1 and batch.std() > 0.01
    if kind in ("grey_rgb", "L"):
        assert (batch[:, 0] - batch[:, 1]).abs().max() < 0.05 and (batch[:, 2] - batch[:, 1]).abs().max() < 0.05


@pytest.fixture
def messy_folder(train_dir: Path, tmp_path: Path) -> Path:
    """Three real photos, a file of random bytes named .jpg and a truncated JPEG."""
    folder = tmp_path / "messy"
    (folder / "sub").mkdir(parents=True)
    for path in PHOTOS:
        shutil.copy(train_dir / path, folder / "sub")
    (folder / "random.jpg").write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    data = (train_dir / SMALL).read_bytes()
    (folder / "sub" / "truncated.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(OSError):
        Image.open(folder / "sub" / "truncated.jpg").load()
    assert count_images(folder) == 5
    return folder


def test_unreadable_files_are_skipped_and_counted(
    messy_folder: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    dm = module(messy_folder, tmp_path)
    with caplog.at_level(logging.WARNING, logger="faststyle.data"):
        batches = take(dm, 15)
    assert all(batch.shape == (4, 3, 64, 64) for batch in batches)
    assert dm.skipped == 2
    assert "random.jpg" in caplog.text and "truncated.jpg" in caplog.text
    # Worker processes share the count, and a file skipped by two workers counts once.
    workers = module(messy_folder, tmp_path, num_workers=2)
    assert all(batch.shape == (4, 3, 64, 64) for batch in take(workers, 16))
    assert workers.skipped == 2


@pytest.mark.parametrize("stream", [False, True], ids=["indexed", "streamed"])
def test_a_resumed_module_knows_the_unreadable_photos_already_found(
    messy_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stream: bool
) -> None:
    first = module(messy_folder, tmp_path, stream=stream)
    take(first, 15)
    assert first.skipped == 2
    state = first.state_dict()  # what Lightning keeps in a checkpoint
    assert state["source"] == str(messy_folder.resolve())
    monkeypatch.chdir(messy_folder.parent)  # the resumed run names the same folder relatively
    resumed = module(Path(messy_folder.name), tmp_path, stream=stream, start_step=15)
    resumed.load_state_dict(state)
    assert resumed.skipped == 2
    opened: list[str] = []
    real_open = data._open

    def counting_open(image: dict, *args: object, **kwargs: object) -> Image.Image:
        opened.append(str(image.get("path")))
        return real_open(image, *args, **kwargs)

    monkeypatch.setattr(data, "_open", counting_open)
    take(resumed, 15)
    assert opened and not [p for p in opened if p.endswith(("random.jpg", "truncated.jpg"))]  # not read again
    assert resumed.skipped == 2


def test_training_crops_are_in_srgb_converted_after_cropping() -> None:
    painting = SHARED / "data/styles/gauguin_three_tahitian_women_1896.jpg"  # an Adobe RGB (1998) profile

    def crop(photo: Image.Image) -> torch.Tensor:
        return data._random_crop(photo, 128, None, True, torch.Generator().manual_seed(3))

    deferred = crop(data._open({"path": str(painting)}, convert_profile=False))
    assert torch.equal(deferred, crop(open_image(painting)))  # the same pixels as converting the whole painting
    with Image.open(painting) as raw:
        as_if_srgb = raw.convert("RGB")
    as_if_srgb.info.pop("icc_profile")
    assert (deferred - crop(as_if_srgb)).abs().max() > 0.1


def test_a_large_jpeg_is_decoded_at_a_fraction_of_its_size_for_short_side(tmp_path: Path) -> None:
    """A camera-sized JPEG cropped at --short-side is decoded at 1/4 of its size (the largest reduction that keeps it
    over 256 px a side) and gives nearly the crops the whole decode gives; a PNG and a small JPEG decode whole."""
    photo = open_image(SHARED / "data/content/tubingen.jpg").resize((2048, 1536), Image.Resampling.BICUBIC)
    photo.save(tmp_path / "camera.jpg", quality=92)
    photo.save(tmp_path / "camera.png")
    drafted = data._open({"path": str(tmp_path / "camera.jpg")}, short_side=256)
    assert drafted.size == (512, 384)
    whole = data._open({"path": str(tmp_path / "camera.jpg")})
    assert whole.size == (2048, 1536)
    assert data._open({"path": str(tmp_path / "camera.png")}, short_side=256).size == (2048, 1536)
    assert data._open({"path": str(tmp_path / "camera.jpg")}, short_side=1000).size == (2048, 1536)
    for seed in range(3):  # the same places (the crop scale is 341x256 either way), nearly the same pixels
        crops = [data._random_crop(p, 128, 256, True, torch.Generator().manual_seed(seed)) for p in (drafted, whole)]
        difference = (crops[0] - crops[1]).abs()  # measured: mean 0.006–0.008 (0.2 from another place of the photo)
        assert difference.mean() < 0.015 and difference.max() < 0.2, (difference.mean(), difference.max())
    bytes_only = data._open({"path": None, "bytes": (tmp_path / "camera.jpg").read_bytes()}, short_side=256)
    assert bytes_only.size == (512, 384)


def test_a_crop_resamples_only_its_own_part_of_the_photo(train_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    photo = open_image(train_dir / PHOTOS[2])  # 455x256
    size, short_side = 96, 200

    def drawn(seed: int) -> torch.Tensor:
        return data._random_crop(photo, size, short_side, False, torch.Generator().manual_seed(seed))

    for seed in range(4):  # the same pixels as the whole photo scaled, then cropped where the same draw puts it
        whole = data._crop_scale(photo, size, short_side)
        gen = torch.Generator().manual_seed(seed)
        top = int(torch.randint(whole.height - size + 1, (), generator=gen))
        left = int(torch.randint(whole.width - size + 1, (), generator=gen))
        expected = pil_to_tensor(whole.crop((left, top, left + size, top + size)))[0]
        assert (drawn(seed) - expected).abs().max() <= 1.01 / 255
    sizes: list[tuple[int, int]] = []
    resize = Image.Image.resize
    monkeypatch.setattr(Image.Image, "resize", lambda self, wh, *a, **k: sizes.append(wh) or resize(self, wh, *a, **k))
    banner = photo.resize((6000, 3))  # scaled whole to 64 px high, it was 128000x64 for each crop
    crop = data._random_crop(banner, 64, None, True, torch.Generator().manual_seed(0))
    assert crop.shape == (3, 64, 64) and sizes == [(6000, 3), (64, 64)]


def _png_header(path: Path, width: int, height: int) -> None:
    """A PNG file that says it is ``width`` x ``height``, its pixels cut off after the first few rows: Pillow opens it
    by its header, and fails to decode it."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + header + chunk(b"IDAT", zlib.compress(bytes(1000))))


@pytest.mark.parametrize("pixels", [179_700_000, 200_000_000])  # under and over faststyle's limit; both over Pillow's
def test_a_photo_of_very_many_pixels_is_skipped_not_a_crash(
    messy_folder: Path, tmp_path: Path, pixels: int, caplog: pytest.LogCaptureFixture
) -> None:
    """Pillow refuses over 2 x its own limit (178,956,970 pixels) at Image.open: the look at the photos' sizes
    (and the GPU cache's estimate) raised DecompressionBombError out of training."""
    _png_header(messy_folder / "panorama.png", 30_000, pixels // 30_000)
    with caplog.at_level(logging.WARNING, logger="faststyle.data"):
        batches = take(module(messy_folder, tmp_path), 4)
        cached = module(messy_folder, tmp_path, gpu_cache=True, short_side=80, device="cpu")
        batches.append(cached.sample_batch())
    assert all(batch.shape == (4, 3, 64, 64) for batch in batches)
    assert cached.skipped == 3  # the panorama, beside messy_folder's two broken files
    assert "panorama.png" in caplog.text


def test_a_streamed_photo_skipped_by_several_worker_processes_counts_once(caplog: pytest.LogCaptureFixture) -> None:
    # A stream's shards are reshuffled between loader workers every epoch, so one bad photo reaches several workers
    # (processes started as DataLoader starts its workers, in multiprocessing's default context).
    skips = SkipCounter(None)
    for key in ["/photos/bad.jpg", "/photos/bad.jpg", b"bytes of a photo with no path"]:
        worker = multiprocessing.Process(target=skips.mark, args=(key, "bad", "cannot read"))
        worker.start()
        worker.join(60)
        assert worker.exitcode == 0
    assert skips.count == 2
    with caplog.at_level(logging.WARNING, logger="faststyle.data"):
        skips.mark("/photos/bad.jpg", "bad", "cannot read")
        skips.mark("/photos/other.jpg", "other", "cannot read")
    assert skips.count == 3 and caplog.text.count("skipping unreadable photo") == 1


def test_a_streamed_folder_gives_the_same_kind_of_batches(
    messy_folder: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    dm = module(messy_folder, tmp_path, stream=True, num_workers=2)
    assert dm.num_images == 5
    with caplog.at_level(logging.INFO, logger="faststyle.data"):
        batches = take(dm, 6)
    assert all(batch.shape == (4, 3, 64, 64) and batch.min() >= 0 and batch.max() <= 1 for batch in batches)
    assert dm.skipped == 2  # counted in the loader's worker process
    # a shard per file, so that both workers decode (datasets' imagefolder streams a folder as one shard)
    assert _shard_count(dm.photos) == 5 and "using as many loader workers" not in caplog.text
    photos = dm.val_photos(2, 96)
    assert len(photos) == 2 and all(max(p.shape[-2:]) == 96 for p in photos)
    with pytest.raises(FaststyleError, match="gpu_cache"):
        module(messy_folder, tmp_path, stream=True, gpu_cache=True)


def test_each_ddp_process_gets_its_own_photos_and_crops(messy_folder: Path, tmp_path: Path) -> None:
    """The rank is read when the loader is made (Lightning makes it once the trainer is set up), not at setup,
    which train() runs earlier for the validation photos."""
    from types import SimpleNamespace

    paths, draws = [], []
    for rank in (0, 1):
        trainer = SimpleNamespace(
            global_rank=rank, world_size=2, strategy=SimpleNamespace(root_device=torch.device("cpu"))
        )
        streamed = module(messy_folder, tmp_path, stream=True)
        streamed.setup()  # before the trainer is attached, as in train()
        streamed.trainer = trainer
        loader = streamed.train_dataloader()
        paths.append({example["image"]["path"] for example in loader.dataset.photos})
        cached = module(messy_folder, tmp_path, gpu_cache=True, short_side=80)
        cached.setup()
        cached.trainer = trainer
        draws.append(next(iter(cached.train_dataloader())))
    assert paths[0].isdisjoint(paths[1]) and len(paths[0] | paths[1]) == 5
    assert not torch.equal(draws[0], draws[1])


def test_same_seed_same_batches(messy_folder: Path, tmp_path: Path) -> None:
    first = take(module(messy_folder, tmp_path, seed=3), 2)
    again = take(module(messy_folder, tmp_path, seed=3), 2)
    other = take(module(messy_folder, tmp_path, seed=4), 2)
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not torch.equal(first[0], other[0])


def test_the_crops_do_not_depend_on_the_number_of_loader_workers(train_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in PHOTOS:
        shutil.copy(train_dir / name, folder / Path(name).name)
    alone = take(module(folder, tmp_path, seed=5, batch_size=3), 5)
    for workers in (2, 3):  # one worker draws as the main process does, so it would prove nothing
        batches = take(module(folder, tmp_path, seed=5, batch_size=3, num_workers=workers), 5)
        assert all(torch.equal(a, b) for a, b in zip(alone, batches, strict=True)), workers
    assert len({tuple(batch.flatten()[:8].tolist()) for batch in alone}) == 5  # and the batches differ


def test_a_resumed_run_draws_new_crops(messy_folder: Path, tmp_path: Path) -> None:
    """Resuming at step N must not replay the crops of steps 0, 1, …, which the weights have already seen."""
    fresh = take(module(messy_folder, tmp_path, seed=3), 1)[0]
    resumed = take(module(messy_folder, tmp_path, seed=3, start_step=40), 1)[0]
    assert not torch.equal(fresh, resumed)
    assert torch.equal(resumed, take(module(messy_folder, tmp_path, seed=3, start_step=40), 1)[0])
    cached = module(messy_folder, tmp_path, seed=3, gpu_cache=True, device="cpu", start_step=40)
    assert not torch.equal(
        next(iter(cached.train_dataloader())),
        next(iter(module(messy_folder, tmp_path, seed=3, gpu_cache=True, device="cpu").train_dataloader())),
    )


def test_a_resumed_stream_takes_its_photos_in_another_order(train_dir: Path, tmp_path: Path) -> None:
    """A run trained in short sessions over a stream larger than a session would otherwise see the same first photos
    in every session."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for photo in sorted(train_dir.glob("urban100/*.jpg"))[:16]:
        (folder / photo.name).symlink_to(photo)

    def order(start_step: int) -> list[str]:
        dm = module(folder, tmp_path, seed=3, stream=True, start_step=start_step)
        dm.setup()
        return [Path(example["image"]["path"]).name for example in itertools.islice(dm.photos, 16)]

    first = order(0)
    assert sorted(first) == sorted(p.name for p in folder.iterdir()) and first == order(0)
    assert order(500) != first and order(500) == order(500)


def test_an_animation_among_the_photos_is_noted_once(
    train_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    photo = Image.open(train_dir / PHOTOS[0]).convert("RGB")
    photo.save(folder / "moving.gif", save_all=True, append_images=[photo.rotate(180)], duration=100)
    with caplog.at_level(logging.WARNING, logger="faststyle"):
        take(module(folder, tmp_path, batch_size=2), 4)  # eight crops of the one photo
    assert caplog.text.count("moving.gif has 2 frames or pages; training crops the first") == 1
    assert "stylize_animation" not in caplog.text


def test_file_names_with_glob_characters_are_read(train_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "brackets"
    folder.mkdir()
    for i, photo in enumerate(PHOTOS):
        shutil.copy(train_dir / photo, folder / f"IMG [{i}]*?.jpg")
    dm = module(folder, tmp_path)
    assert dm.num_images == 3 and len(dm.photos) == 3
    assert take(dm, 1)[0].shape == (4, 3, 64, 64) and dm.skipped == 0


def test_names_the_datasets_library_cannot_read_are_left_out_with_a_warning(
    train_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "odd names"
    folder.mkdir()
    shutil.copy(train_dir / PHOTOS[0], folder / "IMG::1.jpg")  # fsspec reads '::' as a chain of file systems
    shutil.copy(train_dir / PHOTOS[1], os.fsencode(folder) + b"/caf\xe9.jpg")  # a Latin-1 name from an old zip
    shutil.copy(train_dir / PHOTOS[2], folder / "$HOME-banner.jpg")  # datasets expands variables in paths
    shutil.copy(train_dir / PHOTOS[2], folder / "fine.jpg")
    with caplog.at_level(logging.WARNING, logger="faststyle.data"):
        dm = module(folder, tmp_path)
        assert take(dm, 1)[0].shape == (4, 3, 64, 64)
    assert dm.num_images == 1
    assert "leaving out 3 photo(s)" in caplog.text and "IMG::1.jpg" in caplog.text


def test_photos_in_formats_training_does_not_read_are_named(
    train_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A phone's .HEIC or .avif photos (Pillow 12 reads AVIF, and stylize takes it) were left out without a word,
    and a folder of nothing else was "no images under" it."""
    folder = tmp_path / "phone"
    folder.mkdir()
    for name in ("IMG_0001.HEIC", "IMG_0002.avif"):
        (folder / name).write_bytes(b"\x00\x00\x00\x1cftypheic" + bytes(100))
    with pytest.raises(FaststyleError, match=r"2 photo\(s\) in formats training does not read \(.avif, .heic\)"):
        module(folder, tmp_path).setup()
    shutil.copy(train_dir / PHOTOS[0], folder / "a.jpg")
    with caplog.at_level(logging.WARNING, logger="faststyle.data"):
        assert module(folder, tmp_path).num_images == 1
    assert "IMG_0001.HEIC" in caplog.text and "convert them to JPEG or PNG" in caplog.text


def test_a_stream_with_no_readable_photo_is_an_error(tmp_path: Path) -> None:
    folder = tmp_path / "junk"
    folder.mkdir()
    for i in range(3):
        (folder / f"junk{i}.jpg").write_bytes(b"not a jpeg" * 20)
    with pytest.raises(FaststyleError, match="none of the streamed training photos could be read"):
        take(module(folder, tmp_path, stream=True), 1)


def test_gpu_cache_on_cpu(messy_folder: Path, tmp_path: Path) -> None:
    dm = module(messy_folder, tmp_path, gpu_cache=True, device="cpu", size=64, short_side=100)
    draws = next(iter(dm.train_dataloader()))  # the cache is built here, where a trainer has set the device
    assert len(dm.cache) == 3 and dm.skipped == 2
    assert all(p.dtype == torch.uint8 and min(p.shape[-2:]) == 100 for p in dm.cache)
    assert draws.shape == (4, 4) and draws.dtype == torch.long
    batch = dm.on_before_batch_transfer(draws, 0)
    assert batch.shape == (4, 3, 64, 64) and batch.dtype == torch.float32
    assert batch.min() >= 0 and batch.max() <= 1
    index, top, left, flip = draws[0].tolist()
    crop = dm.cache[index][:, top : top + 64, left : left + 64].float() / 255
    assert torch.equal(batch[0], crop.flip(-1) if flip else crop)
    sampled = dm.sample_batch(6, torch.Generator().manual_seed(1))
    assert sampled.shape == (6, 3, 64, 64) and sampled.device.type == "cpu"
    assert torch.equal(sampled, dm.sample_batch(6, torch.Generator().manual_seed(1)))
    again = module(messy_folder, tmp_path, gpu_cache=True, device="cpu", size=64, short_side=100)
    assert torch.equal(next(iter(again.train_dataloader())), draws)


def test_gpu_cache_refuses_to_exceed_budget(messy_folder: Path, tmp_path: Path) -> None:
    dm = module(messy_folder, tmp_path, gpu_cache=True, device="cpu", cache_max_gb=1e-5)
    with pytest.raises(FaststyleError, match=r"at their own size takes about .* \(--short-side 80\), leave out --gpu"):
        dm.train_dataloader()
    scaled = module(messy_folder, tmp_path, gpu_cache=True, device="cpu", cache_max_gb=1e-5, short_side=64)
    with pytest.raises(FaststyleError, match=r"at short side 64 takes about .* allowed; leave out --gpu-cache"):
        scaled.train_dataloader()  # no smaller short side to suggest


def _tall_ramps(folder: Path, count: int, size: tuple[int, int] = (900, 1200)) -> Path:
    """Large photos whose rows run from black at the top to white at the bottom."""
    folder.mkdir()
    ramp = np.linspace(0, 255, size[1]).round().astype(np.uint8)
    for i in range(count):
        Image.fromarray(np.repeat(ramp[:, None], size[0], 1)).convert("RGB").save(folder / f"ramp_{i}.png")
    return folder


def test_short_side_scales_photos_so_a_crop_shows_the_whole_scene(tmp_path: Path) -> None:
    folder = _tall_ramps(tmp_path / "large", 2)
    as_they_are = take(module(folder, tmp_path, flip=False), 1)[0]
    scaled = take(module(folder, tmp_path, flip=False, short_side=64), 1)[0]
    cached = [module(folder, tmp_path, flip=False, gpu_cache=True, device="cpu", **o) for o in ({}, {"short_side": 64})]
    cached_crops = [dm.sample_batch(4) for dm in cached]
    assert [p.shape[-2:] for p in cached[0].cache] == [(1200, 900)] * 2  # held as they are, like the loader takes them
    assert [p.shape[-2:] for p in cached[1].cache] == [(85, 64)] * 2
    for crops, (low, high) in zip([as_they_are, scaled, *cached_crops], [(0, 0.1), (0.6, 0.85)] * 2, strict=True):
        spans = (crops[:, 0, -1, :].mean(-1) - crops[:, 0, 0, :].mean(-1)).tolist()
        assert all(low < span < high for span in spans), spans  # 64 of 1200 rows, or 64 of 85
    with pytest.raises(FaststyleError, match="short_side \\(32\\) must be at least the crop size \\(64\\)"):
        module(folder, tmp_path, short_side=32)


def test_large_photos_get_a_hint_to_scale_them(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    folder = _tall_ramps(tmp_path / "large", 3, (300, 400))
    with caplog.at_level(logging.WARNING, logger="faststyle.data"):
        assert module(folder, tmp_path, size=64).num_images == 3
    assert "median short side 300 px" in caplog.text and "--short-side 128" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="faststyle.data"):
        module(folder, tmp_path, size=64, short_side=128).setup()
        module(folder, tmp_path, size=96).setup()  # 300 px is not four crops wide
    assert "--short-side" not in caplog.text


def test_val_photos_are_fixed(train_dir: Path, tmp_path: Path) -> None:
    dm = module(train_dir, tmp_path, val_size=128)
    photos = dm.val_photos(4)
    assert len(photos) == 4
    assert all(p.shape[:2] == (1, 3) and max(p.shape[-2:]) == 128 for p in photos)
    again = module(train_dir, tmp_path, val_size=128).val_photos(4)
    assert all(torch.equal(a, b) for a, b in zip(photos, again, strict=True))


@pytest.mark.parametrize("stream", [False, True], ids=["indexed", "streamed"])
def test_unreadable_photos_passed_over_for_the_validation_photos_are_counted(
    messy_folder: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture, stream: bool
) -> None:
    """A short run may never draw a crop of them: the validation set's pick was the only sign, and it said nothing."""
    dm = module(messy_folder, tmp_path, stream=stream)
    with caplog.at_level(logging.WARNING, logger="faststyle.data"):
        assert len(dm.val_photos(2)) == 2  # indexed: the first and last, both unreadable; streamed: random.jpg first
    assert dm.skipped == (1 if stream else 2)
    assert "skipping unreadable photo" in caplog.text and "random.jpg" in caplog.text
    take(dm, 4)
    assert dm.skipped <= 2


def test_missing_folder_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(FaststyleError, match="does not exist"):
        PhotoDataModule(tmp_path / "nowhere")
    (tmp_path / "photo.jpg").write_bytes(b"")
    with pytest.raises(FaststyleError, match="photo.jpg is a file, not a folder; pass a folder of images"):
        PhotoDataModule(tmp_path / "photo.jpg")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FaststyleError, match="photo.jpg is a file, not a folder"):
        PhotoDataModule("photo.jpg")  # not taken for a hub dataset's name
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FaststyleError, match="no images"):
        PhotoDataModule(empty, cache_dir=tmp_path / "hf").setup()


def test_a_name_that_is_neither_a_folder_nor_on_the_hub_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Offline (HF_HUB_OFFLINE, as set here: unset, an unreachable hub takes 23 s of retries to say the same), or
    online with no such dataset: the same message."""
    import datasets
    import huggingface_hub

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)  # both read the variable when imported
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FaststyleError, match="not a folder here, and the Hugging Face hub did not provide it"):
        PhotoDataModule("photos_typo", cache_dir=tmp_path / "hf").setup()


def _hub_stream(columns: dict[str, bool]):
    """What ``datasets.load_dataset(..., streaming=True)`` gives for a hub dataset of these columns (True: images)."""
    import io

    import datasets

    def examples():
        for i in range(4):
            png = io.BytesIO()
            Image.fromarray(np.random.default_rng(i).integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(png, "PNG")
            yield {name: {"bytes": png.getvalue(), "path": None} if image else i for name, image in columns.items()}

    features = datasets.Features(
        {name: datasets.Image() if image else datasets.Value("int64") for name, image in columns.items()}
    )
    return lambda *args, **kwargs: datasets.IterableDataset.from_generator(examples, features=features)


def test_a_hub_dataset_whose_image_column_has_another_name_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """uoft-cs/cifar10 (the error messages' example) names its images "img": the command line cannot name a column."""
    monkeypatch.setattr("datasets.load_dataset", _hub_stream({"img": True, "label": False}))
    dm = module("uoft-cs/cifar10", tmp_path, size=32, batch_size=2)
    (batch,) = take(dm, 1)
    assert batch.shape == (2, 3, 32, 32) and batch.std() > 0.1
    assert len(dm.val_photos(2)) == 2
    monkeypatch.setattr("datasets.load_dataset", _hub_stream({"left": True, "right": True, "label": False}))
    with pytest.raises(FaststyleError, match=r"no column 'image' .* its image columns are left, right; name the col"):
        module("someone/stereo", tmp_path).setup()


def test_a_misspelt_folder_is_not_asked_of_the_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Asking the hub for "photo" when the folder is "photos" took 27 s of retries offline before the error."""
    (tmp_path / "photos").mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("datasets.load_dataset", lambda *a, **k: pytest.fail("the hub was asked"))
    with pytest.raises(FaststyleError, match=r"--data photo: no such folder here; did you mean photos/\?"):
        PhotoDataModule("photo", cache_dir=tmp_path / "hf").setup()
    with pytest.raises(FaststyleError, match="did you mean photos/"):
        PhotoDataModule("Photos", cache_dir=tmp_path / "hf").setup()


def test_a_missing_folder_within_a_folder_is_not_asked_of_the_hub(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``photos/trian`` (photos/ here) and ``photos/2024/train`` can be no hub dataset (OWNER/NAME): asking the hub
    took 26 s of retries offline, then blamed the hub."""
    (tmp_path / "photos" / "train").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("datasets.load_dataset", lambda *a, **k: pytest.fail("the hub was asked"))
    with pytest.raises(FaststyleError, match=r"--data photos/trian: no such folder in photos/; did you mean photos/tr"):
        PhotoDataModule("photos/trian", cache_dir=tmp_path / "hf").setup()
    with pytest.raises(FaststyleError, match=r"no such folder \(nor photos/2024/\); a dataset on the Hugging Face hub"):
        PhotoDataModule("photos/2024/train", cache_dir=tmp_path / "hf").setup()
    asked: list[str] = []

    def offline(name: str, **options: object) -> None:
        asked.append(name)
        raise ConnectionError("offline")

    monkeypatch.setattr("datasets.load_dataset", offline)
    with pytest.raises(FaststyleError, match="the Hugging Face hub did not provide it"):  # OWNER/NAME: the hub's
        PhotoDataModule("uoft-cs/cifar10", cache_dir=tmp_path / "hf").setup()
    assert asked == ["uoft-cs/cifar10"]


def test_lightning_fit_crops_the_cache_before_transfer(messy_folder: Path, tmp_path: Path) -> None:
    import pytorch_lightning as pl

    class Probe(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.layer = torch.nn.Conv2d(3, 3, 1)
            self.batches: list[torch.Tensor] = []

        def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
            self.batches.append(batch)
            return self.layer(batch).mean()

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=0.1)

    dm = module(messy_folder, tmp_path, gpu_cache=True, short_side=80)
    probe = Probe()
    trainer = pl.Trainer(
        max_steps=2, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, default_root_dir=tmp_path,
    )  # fmt: skip
    trainer.fit(probe, datamodule=dm)
    assert len(probe.batches) == 2
    assert all(b.shape == (4, 3, 64, 64) and b.dtype == torch.float32 for b in probe.batches)


def test_the_photo_cache_knows_cuda_and_cuda_0_for_one_device() -> None:
    """Given --device cuda, the cache's photos are on cuda:0: unequal as torch.device, they rebuilt the cache."""
    from faststyle.data import _same_device

    assert _same_device(torch.device("cuda", 0), torch.device("cuda"))
    assert _same_device(torch.device("cpu"), torch.device("cpu"))
    assert not _same_device(torch.device("cuda", 1), torch.device("cuda", 0))
    assert not _same_device(torch.device("cpu"), torch.device("cuda", 0))
