"""The shared test helpers' own guarantees."""

import pytest

from tests.helpers import assert_equal_nonempty


def test_equal_nonempty_refuses_an_empty_expectation():
    assert_equal_nonempty([3, 1], [3, 1])
    with pytest.raises(AssertionError, match="vacuous"):
        assert_equal_nonempty([], [])  # equal, but nothing was compared
    with pytest.raises(AssertionError):
        assert_equal_nonempty([1, 3], [3, 1])
