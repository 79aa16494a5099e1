"""Data specs, splits, batch iteration, augmentation and one-line data errors."""

from __future__ import annotations

import pickle
import tarfile

import numpy as np
import pytest
import torch

from conftest import shared_path
from widthsearch.cli.main import main
from widthsearch.data import Augment, BatchLoader, load_data
from widthsearch.errors import UserError


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("WIDTHSEARCH_CACHE", str(tmp_path / "cache"))


def test_digits_splits_are_stratified_and_seeded():
    a = load_data("digits", heldout_fraction=0.1, seed=0)
    b = load_data("digits", heldout_fraction=0.1, seed=0)
    c = load_data("digits", heldout_fraction=0.1, seed=1)
    assert a.input_shape == (1, 8, 8) and a.num_classes == 10 and a.classes[3] == "3"
    assert len(a.train) + len(a.heldout) + len(a.test) == 1797
    assert torch.equal(a.heldout.x, b.heldout.x)
    assert not torch.equal(a.heldout.y, c.heldout.y) or not torch.equal(a.heldout.x, c.heldout.x)
    # the test split does not depend on the seed; the held-out split is ~10 % of every class
    assert torch.equal(a.test.x, c.test.x)
    counts = torch.bincount(a.heldout.y, minlength=10)
    assert int(counts.min()) >= 13 and int(counts.max()) <= 19
    # normalised with training statistics
    assert abs(float(torch.cat([a.train.x, a.heldout.x]).mean())) < 1e-4
    assert a.augment.describe() == "none"


def test_heldout_fraction_zero_and_bounds():
    d = load_data("fake:100", heldout_fraction=0.0)
    assert len(d.heldout) == 0 and len(d.train) == 100 and len(d.test) == 20
    with pytest.raises(UserError, match="heldout-fraction"):
        load_data("fake:100", heldout_fraction=1.0)


def test_fake_spec_shapes_and_determinism():
    d = load_data("fake:200:3x16x16:4")
    assert d.input_shape == (3, 16, 16) and d.num_classes == 4
    assert d.augment.pad == 0  # synthetic data is not augmented
    again = load_data("fake:200:3x16x16:4")
    assert torch.equal(d.train.x, again.train.x)


@pytest.mark.parametrize(
    "spec, message",
    [
        ("nope", "unknown data set"),
        ("fake:abc", "fake:N"),
        ("fake:10:3x3", "fake:N"),
        ("cifar10", "needs an argument"),
        ("cifar10:/does/not/exist", "does not exist"),
        ("imagefolder:/does/not/exist", "does not exist"),
        ("fashion_mnist:/does/not/exist.npz", "does not exist"),
        ("digits:3", "no argument"),
        ("", "empty data spec"),
    ],
)
def test_bad_specs_raise_user_error(spec, message):
    with pytest.raises(UserError, match=message):
        load_data(spec)


def test_malformed_npz_and_cifar_folder(tmp_path):
    bad = tmp_path / "bad.npz"
    np.savez(bad, xtr=np.zeros((4, 28, 28), np.uint8), ytr=np.zeros(4, np.uint8))
    with pytest.raises(UserError, match="lacks key"):
        load_data(f"fashion_mnist:{bad}")
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a zip file")
    with pytest.raises(UserError, match="cannot read"):
        load_data(f"fashion_mnist:{garbage}")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match="no images"):
        load_data(f"cifar10:{empty}")


def test_cli_reports_data_errors_with_exit_2(tmp_path, capsys):
    code = main(["supernet", "--model", "tiny_cnn", "--data", "cifar10:/does/not/exist", "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1 and "does not exist" in err


def _write_cifar_pickles(folder, n=20):
    rng = np.random.default_rng(0)
    folder.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"labels": list(rng.integers(0, 10, n))}
        with open(folder / name, "wb") as fh:
            pickle.dump(batch, fh)


def test_cifar_python_batches(tmp_path):
    _write_cifar_pickles(tmp_path / "cifar-10-batches-py")
    for spec in (f"cifar10:{tmp_path}", f"cifar10:{tmp_path / 'cifar-10-batches-py'}"):
        d = load_data(spec, heldout_fraction=0.1)
        assert d.input_shape == (3, 32, 32) and d.num_classes == 10 and d.classes[0] == "airplane"
        assert len(d.train) + len(d.heldout) == 100 and len(d.test) == 20
        assert d.augment.pad == 4 and d.augment.flip


def _image_tree(root, size=(32, 32), classes=("cat", "dog"), per_class=3):
    from PIL import Image

    rng = np.random.default_rng(1)
    for split in ("train", "test"):
        for c in classes:
            (root / split / c).mkdir(parents=True)
            for i in range(per_class):
                arr = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
                Image.fromarray(arr).save(root / split / c / f"{i}.png")


def test_image_folder_tree_archive_and_cache(tmp_path, monkeypatch):
    root = tmp_path / "imgs"
    _image_tree(root)
    d = load_data(f"cifar10:{root}")
    assert d.classes == ["cat", "dog"] and d.input_shape == (3, 32, 32)
    assert len(d.train) + len(d.heldout) == 6 and len(d.test) == 6
    assert list((tmp_path / "cache").glob("cifar10-*.npz")), "decoded arrays are cached"

    # the cached arrays are used the second time: decoding is not called again
    import widthsearch.data.images as images_mod

    monkeypatch.setattr(images_mod, "decode_tree", lambda *a, **k: (_ for _ in ()).throw(AssertionError("decoded")))
    again = load_data(f"cifar10:{root}")
    assert torch.equal(again.test.x, d.test.x)
    monkeypatch.undo()
    monkeypatch.setenv("WIDTHSEARCH_CACHE", str(tmp_path / "cache2"))

    # the same tree in a .tar.gz under one top-level folder gives the same arrays
    archive = tmp_path / "imgs.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(root, arcname="cifar10_jpg")
    from_tar = load_data(f"imagefolder:{archive}")
    assert torch.equal(from_tar.test.x, d.test.x) and torch.equal(from_tar.test.y, d.test.y)


def test_image_folder_val_split_and_resize(tmp_path):
    from PIL import Image

    root = tmp_path / "imgs"
    _image_tree(root, size=(12, 12))
    (root / "test").rename(root / "val")
    Image.fromarray(np.zeros((20, 16, 3), np.uint8)).save(root / "train" / "cat" / "odd.png")
    d = load_data(f"imagefolder:{root}", heldout_fraction=0.0)
    assert d.input_shape == (3, 12, 12) and len(d.train) == 7 and len(d.test) == 6


def _one_line_error(spec):
    with pytest.raises(UserError) as info:
        load_data(spec)
    message = str(info.value)
    assert "\n" not in message, message
    return message


def test_corrupt_image_is_a_one_line_error_naming_the_file(tmp_path):
    root = tmp_path / "imgs"
    _image_tree(root)
    (root / "train" / "cat" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    message = _one_line_error(f"imagefolder:{root}")
    assert "cannot decode" in message and str(root / "train" / "cat" / "broken.jpg") in message
    assert "BytesIO" not in message
    # the same image inside an archive: named by its member path and the archive
    archive = tmp_path / "imgs.tar"
    with tarfile.open(archive, "w") as tf:
        tf.add(root, arcname="top")
    message = _one_line_error(f"imagefolder:{archive}")
    assert "top/train/cat/broken.jpg" in message and str(archive) in message and "BytesIO" not in message


def test_corrupt_or_truncated_archive_is_a_one_line_error_naming_it(tmp_path):
    root = tmp_path / "imgs"
    _image_tree(root)
    good = tmp_path / "good.tar.gz"
    with tarfile.open(good, "w:gz") as tf:
        tf.add(root, arcname="top")
    truncated = tmp_path / "truncated.tar.gz"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    garbage = tmp_path / "garbage.tar"
    garbage.write_bytes(b"not a tar archive at all " * 40)
    for archive in (truncated, garbage):
        message = _one_line_error(f"imagefolder:{archive}")
        assert str(archive) in message and "archive" in message


def _write_batch(path, obj, protocol=pickle.DEFAULT_PROTOCOL):
    with open(path, "wb") as fh:
        pickle.dump(obj, fh, protocol=protocol)


class _RunsCode:
    """Unpickling this calls print: the harmless stand-in for os.system in a crafted batch."""

    def __reduce__(self):
        return (print, ("pwned",))


def test_cifar_batch_that_would_run_code_is_refused(tmp_path, capsys):
    folder = tmp_path / "cifar-10-batches-py"
    _write_cifar_pickles(folder)
    batch = {b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1], b"extra": _RunsCode()}
    _write_batch(folder / "data_batch_1", batch)
    message = _one_line_error(f"cifar10:{folder}")
    assert "refusing" in message and "data_batch_1" in message and "builtins.print" in message
    assert "pwned" not in capsys.readouterr().out
    # the optional batches.meta is read the same way, and a crafted one is not skipped silently
    _write_cifar_pickles(tmp_path / "clean")
    _write_batch(tmp_path / "clean" / "batches.meta", {b"label_names": _RunsCode()})
    assert "batches.meta" in _one_line_error(f"cifar10:{tmp_path / 'clean'}")
    assert "pwned" not in capsys.readouterr().out


def test_cifar_batch_that_is_not_a_dict_is_a_one_line_error(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    _write_cifar_pickles(folder)
    _write_batch(folder / "test_batch", [np.zeros((2, 3072), np.uint8), [0, 1]])
    message = _one_line_error(f"cifar10:{folder}")
    assert "test_batch" in message and "not a dict" in message


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_cifar_batches_of_any_protocol_and_numpy_1_load(tmp_path, protocol):
    folder = tmp_path / "cifar-10-batches-py"
    _write_cifar_pickles(folder)
    rng = np.random.default_rng(1)
    batch = {b"data": rng.integers(0, 256, (20, 3072), dtype=np.uint8), b"labels": [int(v) for v in rng.integers(0, 10, 20)],
             b"batch_label": b"training batch 1 of 5", b"filenames": [b"a.png"] * 20}
    data = pickle.dumps(batch, protocol=protocol)
    if protocol == 0:  # what numpy 1 writes: its multiarray module was numpy.core.multiarray
        data = data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
        assert b"numpy.core.multiarray" in data
    (folder / "data_batch_1").write_bytes(data)
    d = load_data(f"cifar10:{folder}", heldout_fraction=0.0)
    assert torch.equal(d.train.y[:20], torch.tensor(batch[b"labels"]))
    assert len(d.train) == 100


def test_fashion_mnist_real_file():
    path = shared_path("data", "fashion_mnist.npz")
    d = load_data(f"fashion_mnist:{path}")
    assert d.input_shape == (1, 28, 28) and d.num_classes == 10
    assert len(d.train) == 54000 and len(d.heldout) == 6000 and len(d.test) == 10000


def test_batch_loader_order_sharding_and_drop_last():
    x = torch.arange(10.0).view(10, 1, 1, 1)
    y = torch.arange(10)
    plain = list(BatchLoader(x, y, 4))
    assert [len(b[1]) for b in plain] == [4, 4, 2]
    assert torch.equal(torch.cat([b[1] for b in plain]), y)
    loader = BatchLoader(x, y, 4, shuffle=True, drop_last=True, seed=3)
    assert len(loader) == 2
    loader.set_epoch(0)
    e0 = torch.cat([b[1] for b in loader])
    e0_again = torch.cat([b[1] for b in loader])
    loader.set_epoch(1)
    e1 = torch.cat([b[1] for b in loader])
    assert torch.equal(e0, e0_again) and not torch.equal(e0, e1)
    # shards of two ranks are disjoint, equal in size, and drawn from the same permutation
    shards = [torch.cat([b[1] for b in BatchLoader(x, y, 5, shuffle=True, seed=3, rank=r, world_size=2)]) for r in (0, 1)]
    assert len(shards[0]) == len(shards[1]) == 5
    assert set(shards[0].tolist()).isdisjoint(shards[1].tolist())
    assert set(shards[0].tolist()) | set(shards[1].tolist()) == set(range(10))


def test_augment_crop_and_flip():
    x = torch.arange(2 * 16, dtype=torch.float32).view(2, 1, 4, 4)
    g = torch.Generator().manual_seed(0)
    flipped = Augment(flip=True)(x.repeat(50, 1, 1, 1), g)
    assert flipped.shape == (100, 1, 4, 4)
    is_flip = [bool(torch.equal(f, x[i % 2].flip(2))) for i, f in enumerate(flipped)]
    is_same = [bool(torch.equal(f, x[i % 2])) for i, f in enumerate(flipped)]
    assert all(a or b for a, b in zip(is_flip, is_same)) and 20 < sum(is_flip) < 80
    cropped = Augment(pad=1, fill=(-7.0,))(x.repeat(50, 1, 1, 1), g)
    allowed = set(x.flatten().tolist()) | {-7.0}
    assert set(cropped.flatten().tolist()) <= allowed
    assert (cropped == -7.0).any() and cropped.shape == (100, 1, 4, 4)
    # same generator seed, same augmentation
    a = Augment(pad=2, flip=True, fill=(0.0,))
    assert torch.equal(a(x, torch.Generator().manual_seed(5)), a(x, torch.Generator().manual_seed(5)))


@pytest.mark.parametrize("pad, flip", [(4, True), (2, False), (0, True)])
def test_augment_is_per_image_crop_then_flip_from_the_same_draws(pad, flip):
    # what a batch must equal, written one image at a time: the draws are the crop rows, the crop
    # columns, then the flips, so a seeded epoch gives the same batches whatever the implementation
    x, g = torch.randn(9, 3, 5, 7), torch.Generator().manual_seed(3)
    fill = torch.tensor([0.5, -1.0, 2.0]).view(3, 1, 1)
    oy = torch.randint(0, 2 * pad + 1, (9,), generator=g) if pad else torch.zeros(9, dtype=torch.long)
    ox = torch.randint(0, 2 * pad + 1, (9,), generator=g) if pad else torch.zeros(9, dtype=torch.long)
    flips = torch.rand(9, generator=g) < 0.5 if flip else torch.zeros(9, dtype=torch.bool)
    expected = []
    for i in range(9):
        padded = fill.expand(3, 5 + 2 * pad, 7 + 2 * pad).clone()
        padded[:, pad:pad + 5, pad:pad + 7] = x[i]
        crop = padded[:, oy[i]:oy[i] + 5, ox[i]:ox[i] + 7]
        expected.append(crop.flip(2) if flips[i] else crop)
    got = Augment(pad=pad, flip=flip, fill=(0.5, -1.0, 2.0))(x, torch.Generator().manual_seed(3))
    assert torch.equal(got, torch.stack(expected)) and got.is_contiguous()


def test_dataset_loader_uses_dataset_augmentation():
    d = load_data("fake:64:3x32x32:2", heldout_fraction=0.0)
    d.augment = Augment(pad=4, flip=True, fill=(0.0, 0.0, 0.0))
    xb, yb = next(iter(d.loader("train", 16, shuffle=True, augment=True)))
    assert xb.shape == (16, 3, 32, 32) and yb.dtype == torch.int64
    xb_plain, _ = next(iter(d.loader("train", 16)))
    assert torch.equal(xb_plain, d.train.x[:16])
