"""tests/fixtures is a copy of ../shared/fixtures (so a clean clone runs alone); keep them equal."""
import filecmp
import os

import pytest

from loralab_testkit import FIXTURES, SHARED_FIXTURES


@pytest.mark.skipif(not os.path.isdir(SHARED_FIXTURES), reason="../shared/fixtures is not beside this checkout")
def test_vendored_fixtures_equal_shared():
    for sub in ("loras", "models", "metadata"):
        shared = sorted(os.listdir(os.path.join(SHARED_FIXTURES, sub)))
        assert sorted(os.listdir(os.path.join(FIXTURES, sub))) == shared, sub
        _, mismatch, errors = filecmp.cmpfiles(os.path.join(SHARED_FIXTURES, sub), os.path.join(FIXTURES, sub),
                                               shared, shallow=False)
        assert not mismatch and not errors, (sub, mismatch, errors)
