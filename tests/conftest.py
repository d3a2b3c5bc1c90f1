"""Engine test configuration (no ComfyUI needed)."""
import pytest
import torch

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture
def tmp(tmp_path):
    """A temp folder as a string."""
    return str(tmp_path)
