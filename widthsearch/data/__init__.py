"""In-memory image-classification data for supernet training, search and retraining.

A data set is named by a *spec string* (the ``--data`` option of the command line):

``digits``
    scikit-learn's bundled 8x8 handwritten digits (1x8x8, 10 classes, 1,797 images). Nothing is
    downloaded. There is no official test split, so a fixed stratified 20 % (seed 0, whatever
    ``--seed`` says) is the test set.
``cifar10:PATH``
    CIFAR-10 as either the python-pickle batches folder (``data_batch_1`` .. ``data_batch_5`` and
    ``test_batch``), a class-folder tree ``PATH/{train,test}/<class>/*.jpg|png``, or a ``.tar``/
    ``.tar.gz`` archive of such a tree (optionally under one top-level folder).
``imagefolder:PATH``
    ``PATH/train/<class>/*`` and ``PATH/test/<class>/*`` (or ``val/``) images. Held in memory
    (images of another size resized to the most common one; also from a ``.tar``/``.tar.gz``
    archive) or, for a folder whose decoded images would pass 2 GiB (or with ``loading="stream"``),
    streamed through a ``DataLoader`` with the ImageNet transforms (:mod:`~widthsearch.data.stream`).
``fashion_mnist:FILE.npz``
    an ``.npz`` with ``xtr`` (N, 28, 28) uint8, ``ytr``, ``xte``, ``yte``.
``fake:N[:CxHxW[:K]]``
    ``N`` synthetic, learnable training images (default shape 1x8x8, ``K`` = 10 classes) plus
    ``N // 5`` test images; class prototypes plus noise, fully determined by the spec.

Decoded image files (JPEG/PNG) are cached as uint8 ``.npz`` arrays in ``$WIDTHSEARCH_CACHE`` (or
``~/.cache/widthsearch``), keyed by the absolute path, size and modification time of the source,
so the decoding cost is paid once.

Everything lives in memory as tensors: ``x`` float32 NCHW, normalised with the per-channel mean
and standard deviation of the training images; ``y`` int64. A *held-out* part of the training
data (default 10 %, stratified by class, drawn with ``seed``) is kept apart for the search and
for BN calibration; the test split is only for final reporting.

Modules: :mod:`~widthsearch.data.core` (splits, data set, batch loader, seeding),
:mod:`~widthsearch.data.augment`, :mod:`~widthsearch.data.loading` (``load_data``),
:mod:`~widthsearch.data.sources` (digits, Fashion-MNIST, fake), :mod:`~widthsearch.data.cifar`,
:mod:`~widthsearch.data.images` (image folders and archives), :mod:`~widthsearch.data.cache`,
:mod:`~widthsearch.data.stream` (streamed image folders), :mod:`~widthsearch.data.transforms`.
"""

from widthsearch.data.augment import Augment
from widthsearch.data.cache import cache_dir
from widthsearch.data.core import BatchLoader, Dataset, Split, mix_seed
from widthsearch.data.loading import (DATA_HELP, LOADINGS, check_heldout, load_data, load_run_data,
                                      same_data_spec)

__all__ = [
    "Augment",
    "BatchLoader",
    "Dataset",
    "Split",
    "cache_dir",
    "load_data",
    "load_run_data",
    "check_heldout",
    "LOADINGS",
    "mix_seed",
    "DATA_HELP",
    "same_data_spec",
]
