"""Counts and shapes as people write them: 300.77M, 1.5G, 3x224x224."""

import pytest

from widthsearch.errors import UserError
from widthsearch.formatting import format_count, parse_count, parse_shape


def test_format_and_parse_counts():
    assert format_count(300_770_000) == "300.77M" and format_count(4.09e9) == "4.09G" and format_count(12) == "12"
    assert parse_count("300M") == 3e8 and parse_count(" 1.5g ") == 1.5e9 and parse_count("4") == 4.0
    with pytest.raises(UserError, match="300M"):
        parse_count("lots")


def test_parse_shape():
    assert parse_shape("3x224x224") == (3, 224, 224) and parse_shape("1*8*8") == (1, 8, 8)
    assert parse_shape([3, 32, 32]) == (3, 32, 32)
    for bad in ("3xax4", "3x0x4"):
        with pytest.raises(UserError, match="bad input shape"):
            parse_shape(bad)


def test_old_import_path_still_works():
    from widthsearch.space import units

    assert units.format_count is format_count and units.parse_count is parse_count and units.parse_shape is parse_shape
