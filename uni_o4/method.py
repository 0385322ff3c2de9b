"""The one interface every fine-tuning method implements, as `uni_o4 finetune` and the pipeline drive it.

A method is constructed from its name and preset (uni_o4/registry.py: one line per method), then
- offline: `finetune_offline(job)` turns robot logs (and the incumbent policy, if any) into a candidate policy
  file and the AM-Q scores the deployment gate compares; what happens in between is the method's own:
  gradient steps on the logged dataset (Uni-O4, IQL, Cal-QL, O3F), or e.g. calibrating a simulator from the
  logs and training in it (a method whose `data_config` is None gets no dataset and reads `job.logs` itself);
- online: `online_learner(...)` continues an offline result on the robot as a `Learner` (uni_o4/online.py):
  explore (`behaviour`), update between rollouts, export the deployable actor, save/load its state.
Normalisation, networks and the method's own checkpoints stay inside the method.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from robot_spec.config import named_config
from robot_spec.policy_io import LoadedPolicy
from robot_spec.spec import RobotSpec
from uni_o4.dataset import OfflineDataset
from uni_o4.log_dataset import LogDataConfig, LogReport

if TYPE_CHECKING:
    from uni_o4.online import Learner, OnlineConfig


@dataclass
class OfflineJob:
    """What an offline fine-tuning run is given (`uni_o4 finetune --offline`)."""

    name: str  # the method's registry name
    preset: str  # configs/finetune/<preset>.yaml: the method's config
    logs: list[Path]  # log folders (folders below them count too)
    spec: RobotSpec
    out: Path  # the run folder: candidate/policy.pt and the method's artefacts go here
    init: LoadedPolicy | None = None  # the incumbent policy (sim-pretrained or deployed), if any
    init_path: Path | None = None
    seed: int | None = None  # overrides the preset's
    device: str = "cpu"
    cache: Path | None = None  # artefact cache shared across runs (default out/cache)
    ope_preset: str = "uni_o4"  # the Uni-O4 preset whose AM-Q scores candidates of other methods for the gate
    data: OfflineDataset | None = None  # the logs as a dataset, by the method's `data_config` (None: none asked)
    data_report: LogReport | None = None
    writer: Any = None  # TensorBoard SummaryWriter
    overrides: dict = field(default_factory=dict)  # `--set` values over the preset (robot_spec.config.parse_overrides)

    @property
    def preset_file(self) -> Path:
        return named_config("finetune", self.preset)


@dataclass
class OfflineOutcome:
    candidate: Path  # the candidate policy file (save_policy format)
    score: float  # its AM-Q
    incumbent_score: float  # the incumbent's AM-Q by the same yardstick (-inf without one)
    details: dict = field(default_factory=dict)  # for report.json


class FineTuningMethod(ABC):
    """A fine-tuning method (see the module notes)."""

    def __init__(self, name: str, algorithm: type | None = None):
        self.name, self.algorithm = name, algorithm  # algorithm: a gradient-step Algorithm class, if it has one

    @abstractmethod
    def data_config(self, job: OfflineJob) -> LogDataConfig | None:
        """How the logs become the offline dataset (job.data); None: the method reads job.logs itself."""

    @abstractmethod
    def finetune_offline(self, job: OfflineJob) -> OfflineOutcome: ...

    def report(self, outcome: OfflineOutcome, decision, out: Path) -> None:
        """After the gate's `decision`: the method's own plots (none by default)."""

    @abstractmethod
    def online_learner(self, result_dir: Path, source: dict, spec: RobotSpec, cfg: OnlineConfig,
                       device: str = "cpu") -> tuple[Learner, LogDataConfig]:  # fmt: skip
        """The learner that continues the offline run in `result_dir` (`source`: its finetune.json) on the robot,
        and the log→data config its updates read rollouts with."""
