"""Progress lines off a terminal: the interval and its environment override."""
import pytest

from widthsearch.errors import UserError
from widthsearch.progress import INTERVAL_ENV, Progress, log_interval


def test_interval_defaults_and_env_override(monkeypatch):
    monkeypatch.delenv(INTERVAL_ENV, raising=False)
    assert log_interval(60.0) == 60.0
    monkeypatch.setenv(INTERVAL_ENV, "2.5")
    assert log_interval(60.0) == 2.5
    assert Progress(10, "x").interval == 2.5


@pytest.mark.parametrize("raw", ["soon", "0", "-1"])
def test_bad_interval_is_a_user_error(monkeypatch, raw):
    monkeypatch.setenv(INTERVAL_ENV, raw)
    with pytest.raises(UserError, match=INTERVAL_ENV):
        log_interval(60.0)


def test_lines_appear_every_interval(monkeypatch, capsys):
    monkeypatch.setenv(INTERVAL_ENV, "1e-9")
    bar = Progress(4, "epoch 1/1")
    bar.update(1, loss="0.5")
    bar.update(1)
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("epoch 1/1: 1/4 steps") and "loss 0.5" in err[0]
    assert err[1].startswith("epoch 1/1: 2/4 steps")
