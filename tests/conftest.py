import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


# Tests run small tensors: one thread avoids thread start-up and contention costs on 2 cores.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="session")
def supernet_dir(tmp_path_factory):
    """A tiny_cnn supernet trained for one epoch on digits (6 widths per unit), for the search tests."""
    from widthsearch.training.slimmable import train_supernet

    out = tmp_path_factory.mktemp("supernet")
    train_supernet({"model": "tiny_cnn", "data": "digits", "epochs": 1, "groups": 6, "threads": 1}, out)
    return out


def shared_path(*parts: str) -> Path:
    """A file under ../shared beside the repo, or skip the test with the reason."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is not present (../shared is only beside the repo on the dev/CI machines)")
    return path


sys.path.insert(0, str(REPO / "tests"))
