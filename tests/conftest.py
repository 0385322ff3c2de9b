import os
import tempfile

import pytest
import torch

# Tests arm with a secret of their own, never the user's (real_robot.arming); their subprocesses inherit it.
os.environ.setdefault("GO1_ARM_SECRET", os.path.join(tempfile.mkdtemp(prefix="go1_arm_"), "arm_secret"))

# Tests share 2 cores with everything else; keep torch from oversubscribing them.
torch.set_num_threads(1)
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def spec():
    from robot_spec import load_robot

    return load_robot("go1")
