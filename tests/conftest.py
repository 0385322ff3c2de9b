import os

import pytest
import torch

# Tests share 2 cores with everything else; keep torch from oversubscribing them.
torch.set_num_threads(1)
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def spec():
    from robot_spec import load_robot

    return load_robot("go1")
