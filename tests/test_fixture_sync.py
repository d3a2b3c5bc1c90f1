"""tests/fixtures holds a copy of ../shared/fixtures (so a clean clone runs alone) plus the fixtures
this project adds for new families and producers: every shared fixture is vendored unchanged."""
import filecmp
import os

import pytest

from loralab_testkit import FIXTURES, SHARED_FIXTURES


@pytest.mark.skipif(not os.path.isdir(SHARED_FIXTURES), reason="../shared/fixtures is not beside this checkout")
def test_vendored_fixtures_include_shared_unchanged():
    for sub in ("loras", "models", "metadata"):
        shared = sorted(os.listdir(os.path.join(SHARED_FIXTURES, sub)))
        missing = sorted(set(shared) - set(os.listdir(os.path.join(FIXTURES, sub))))
        assert not missing, (sub, missing)
        _, mismatch, errors = filecmp.cmpfiles(os.path.join(SHARED_FIXTURES, sub), os.path.join(FIXTURES, sub),
                                               shared, shallow=False)
        assert not mismatch and not errors, (sub, mismatch, errors)
