"""The package imports and exposes its version."""

import memagent


def test_version_is_pep440_like():
    major, minor, patch = memagent.__version__.split(".")
    assert (int(major), int(minor), int(patch)) >= (0, 1, 0)
