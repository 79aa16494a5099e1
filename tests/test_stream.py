"""Streamed image folders: transforms, loader order/sharding/seeding, auto mode, exact resume."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from widthsearch.data import load_data
from widthsearch.data.stream import StreamSplit
from widthsearch.data.transforms import CenterCrop, RandomResizedCrop
from widthsearch.errors import UserError


def write_jpeg_folder(root, per_class: int = 12, classes: int = 3, size: tuple[int, int] = (16, 20)) -> None:
    """``root/train/c<k>/*.jpg`` and ``root/val/c<k>/*.jpg``: noise around a per-class grey level."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, count in (("train", per_class), ("val", max(1, per_class // 4))):
        for c in range(classes):
            folder = root / split / f"c{c}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                pixels = rng.integers(0, 60, (size[0], size[1], 3)) + 80 * c
                Image.fromarray(pixels.astype(np.uint8)).save(folder / f"{i:03d}.jpg", quality=90)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("jpegs")
    write_jpeg_folder(root)
    return root


def _batches(loader, epoch):
    loader.set_epoch(epoch)
    return [(x.clone(), y.clone()) for x, y in loader]


# --- transforms ------------------------------------------------------------------------------------


def test_random_resized_crop_boxes_stay_inside_and_follow_the_seed():
    crop = RandomResizedCrop(16)
    for width, height in ((40, 30), (17, 200), (300, 12)):
        for seed in range(50):
            left, top, right, bottom = crop.box(width, height, random.Random(seed))
            assert 0 <= left < right <= width and 0 <= top < bottom <= height
            area = (right - left) * (bottom - top) / (width * height)
            # sampled crops keep 8..100 % of the area; the central fallback may be larger than a sample
            assert area <= 1.0 + 1e-9
    assert crop.box(40, 30, random.Random(3)) == crop.box(40, 30, random.Random(3))


def test_center_crop_takes_the_middle_after_resizing_the_short_side():
    from PIL import Image

    # a 64x32 image (W x H), left half black and right half white: the central crop straddles
    # the edge, so the crop's left columns are dark and its right columns bright
    pixels = np.zeros((32, 64, 3), np.uint8)
    pixels[:, 32:] = 255
    out = np.asarray(CenterCrop(14)(Image.fromarray(pixels)))
    assert out.shape == (14, 14, 3)
    assert out[:, :4].max() < 30 and out[:, -4:].min() > 225
    size, box = CenterCrop(224).box(500, 375)
    assert size == (341, 256)  # the shorter side becomes 256 = 224 / 0.875
    assert box[2] - box[0] == pytest.approx(224 * 500 / 341) and box[3] - box[1] == pytest.approx(224 * 375 / 256)


# --- the streamed data set -------------------------------------------------------------------------------


def test_streamed_folder_splits_shapes_and_heldout_draw(folder):
    d = load_data(f"imagefolder:{folder}", heldout_fraction=0.25, seed=0, loading="stream", image_size=12)
    assert d.stream is not None and isinstance(d.train, StreamSplit)
    assert d.input_shape == (3, 12, 12) and d.classes == ["c0", "c1", "c2"]
    assert len(d.train) + len(d.heldout) == 36 and len(d.test) == 9
    assert torch.bincount(d.heldout.y).tolist() == [3, 3, 3]  # stratified
    assert not set(d.train.files) & set(d.heldout.files)
    again = load_data(f"imagefolder:{folder}", heldout_fraction=0.25, seed=0, loading="stream", image_size=12)
    other = load_data(f"imagefolder:{folder}", heldout_fraction=0.25, seed=1, loading="stream", image_size=12)
    assert again.heldout.files == d.heldout.files and other.heldout.files != d.heldout.files
    # evaluation images decode on indexing: normalised floats, the same every time
    x = d.test.x[torch.tensor([0, 4])]
    assert x.shape == (2, 3, 12, 12) and x.dtype == torch.float32
    assert torch.equal(x, d.test.x[[0, 4]]) and torch.equal(d.test.x[4], x[1])
    assert d.test.x[0:3].shape == (3, 3, 12, 12) and d.summary()["loading"] == "stream"


def test_loader_epochs_are_seeded_and_independent_of_workers(folder):
    d = load_data(f"imagefolder:{folder}", heldout_fraction=0.0, seed=0, loading="stream", image_size=12)
    inline = d.loader("train", 8, shuffle=True, drop_last=True, augment=True, seed=0, workers=0)
    assert len(inline) == 36 // 8 and inline.num_samples == 36
    e0 = _batches(inline, 0)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(e0, _batches(inline, 0)))
    e1 = _batches(inline, 1)
    assert not torch.equal(torch.cat([y for _, y in e0]), torch.cat([y for _, y in e1]))  # reshuffled
    # one worker process decodes the same crops and flips: the seed belongs to the image and epoch
    forked = d.loader("train", 8, shuffle=True, drop_last=True, augment=True, seed=0, workers=1)
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(e0, _batches(forked, 0)))
    # augmentation changes pixels; without it the training images equal the evaluation view
    plain = d.loader("train", 36, shuffle=False, augment=False, workers=0)
    x_plain, _ = _batches(plain, 0)[0]
    assert torch.allclose(x_plain, d.train.x[0:36])
    inline.set_epoch(0)
    first = torch.tensor([i for i, _ in inline.sampler][:8])
    assert torch.equal(e0[0][1], d.train.y[first])
    assert not torch.allclose(e0[0][0], d.train.x[first])


def test_loader_shards_like_distributed_sampler(folder):
    d = load_data(f"imagefolder:{folder}", heldout_fraction=0.0, seed=0, loading="stream", image_size=8)
    seen = []
    for rank in (0, 1):
        loader = d.loader("train", 6, shuffle=True, drop_last=True, augment=False, seed=5, rank=rank,
                          world_size=2, workers=0)
        assert len(loader) == 3
        loader.set_epoch(2)
        seen.append(list(loader.sampler))
    indices = [[i for i, _ in s] for s in seen]
    assert not set(indices[0]) & set(indices[1]) and len(set(indices[0]) | set(indices[1])) == 36
    assert all(epoch == 2 for s in seen for _, epoch in s)


def test_auto_mode_stream_flags_and_errors(folder, tmp_path, monkeypatch):
    monkeypatch.setenv("WIDTHSEARCH_CACHE", str(tmp_path / "cache"))
    small = load_data(f"imagefolder:{folder}")
    assert small.stream is None and small.input_shape == (3, 16, 20)  # small: decoded into memory
    assert load_data(f"imagefolder:{folder}", image_size=8).stream is not None  # --image-size streams
    import widthsearch.data.stream as stream_mod

    monkeypatch.setattr(stream_mod, "MEMORY_LIMIT_BYTES", 1000)
    assert load_data(f"imagefolder:{folder}").stream is not None  # too big for memory: streamed
    assert load_data(f"imagefolder:{folder}", loading="memory").stream is None
    # other data ignore the image-folder settings (a recipe for ImageNet also runs on fake: data)
    assert load_data("fake:50", loading="stream", image_size=16).input_shape == (1, 8, 8)
    archive = tmp_path / "a.tar"
    import tarfile

    with tarfile.open(archive, "w") as tf:
        tf.add(folder, arcname="top")
    with pytest.raises(UserError, match="archive"):
        load_data(f"imagefolder:{archive}", loading="stream")


def test_broken_jpeg_in_a_worker_is_a_one_line_error_naming_it(tmp_path):
    root = tmp_path / "imgs"
    write_jpeg_folder(root, per_class=4, classes=2)
    bad = root / "train" / "c1" / "bad.jpg"
    bad.write_bytes(b"\xff\xd8 not a jpeg")
    d = load_data(f"imagefolder:{root}", heldout_fraction=0.0, loading="stream", image_size=8)
    loader = d.loader("train", 3, shuffle=False, augment=True, workers=1)
    with pytest.raises(UserError) as info:
        _batches(loader, 0)
    assert str(bad) in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(UserError, match="bad.jpg"):
        d.train.x[0:len(d.train)]


# --- training on a streamed folder ---------------------------------------------------------------------


def test_supernet_on_streamed_folder_resumes_exactly_and_keeps_its_heldout(folder, tmp_path):
    from widthsearch.training.checkpoint import load_checkpoint
    from widthsearch.training.slimmable import train_supernet

    args = {"model": "tiny_cnn", "data": f"imagefolder:{folder}", "loading": "stream", "image_size": 12,
            "epochs": 2, "batch_size": 9, "calib_images": 9, "groups": 4, "workers": 0, "threads": 1,
            "heldout_fraction": 0.25}
    whole = train_supernet(args, tmp_path / "whole")
    train_supernet(args, tmp_path / "split", stop_after=1)
    # a different worker count may be given on resume: the epoch's images do not depend on it
    resumed = train_supernet({"workers": 1}, tmp_path / "split", resume=True)
    assert whole["epochs_done"] == resumed["epochs_done"] == 2
    a = load_checkpoint(tmp_path / "whole" / "supernet.pt")
    b = load_checkpoint(tmp_path / "split" / "supernet.pt")
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    assert a["args"]["input_shape"] == [3, 12, 12] and a["args"]["loading"] == "stream"
    held = (tmp_path / "whole" / "heldout.txt").read_text().splitlines()
    assert len(held) == 9 and all(line.startswith(str(folder)) for line in held)

    # the searches read the same held-out images back; a changed folder is refused
    from widthsearch.training.evaluate import heldout_eval_set

    x, y, calib, data = heldout_eval_set(a["args"], "calibrate", images=9, calib_images=9)
    assert sorted(data.heldout.files) == sorted(held) and x.shape == (9, 3, 12, 12)
    extra = folder / "train" / "c0" / "zzz.jpg"
    extra.write_bytes((folder / "train" / "c0" / "000.jpg").read_bytes())
    try:
        with pytest.raises(UserError, match="folder changed"):
            heldout_eval_set(a["args"], "calibrate", images=9, calib_images=9)
    finally:
        extra.unlink()
