"""The method registry: every method is built from its one line there, with configs that load, and a new
method plugs in through one class and one line, without a dataset if it reads the logs itself (as a method
that calibrates a simulator from the logs and trains in it would)."""

import json
import shutil

import torch

from robot_spec.config import load_config, named_config
from robot_spec.policy_io import ActorMLP, load_policy, save_policy
from uni_o4 import cli, finetune, registry
from uni_o4.gate import GateDecision
from uni_o4.method import FineTuningMethod, OfflineJob, OfflineOutcome
from uni_o4.offline import OfflineConfig


def test_every_method_is_built_from_its_registry_line_with_presets_that_load():
    for name, entry in registry.METHODS.items():
        method = registry.make_method(name)
        assert isinstance(method, FineTuningMethod) and method.algorithm is entry.algorithm
        for preset in (entry.preset, entry.quick_preset):
            config_type = entry.algorithm.config_type if entry.algorithm else OfflineConfig
            load_config(config_type, named_config("finetune", preset))
    assert registry.ALGOS == tuple(registry.METHODS)


class CopyIncumbent(FineTuningMethod):
    """A toy method that reads the logs itself: its candidate is the incumbent, unchanged."""

    seen: list = []

    def data_config(self, job):
        return None

    def finetune_offline(self, job: OfflineJob) -> OfflineOutcome:
        CopyIncumbent.seen.append(job)
        candidate = job.out / "candidate" / "policy.pt"
        candidate.parent.mkdir(parents=True)
        shutil.copy(job.init_path, candidate)
        return OfflineOutcome(candidate, 1.0, 0.5, {"logs": [str(p) for p in job.logs]})

    def online_learner(self, result_dir, source, spec, cfg, device="cpu"):
        raise NotImplementedError


def test_a_new_method_is_one_class_and_one_registry_line(spec, tmp_path, monkeypatch):
    monkeypatch.setitem(registry.METHODS, "copy", registry.Registered(CopyIncumbent, "uni_o4", "uni_o4_quick"))
    judged = []
    monkeypatch.setattr(finetune, "gate_candidate", lambda req, spec, candidate, scores: (
        judged.append((candidate, scores)) or (GateDecision(passed=True), {})))  # fmt: skip
    actor = ActorMLP(spec.observation.dim, spec.num_joints, [8])
    save_policy(actor, spec, tmp_path / "init.pt")
    logs = tmp_path / "logs"
    (logs / "run").mkdir(parents=True)
    (logs / "run" / "episode_000000.g1log").write_bytes(b"")  # a log folder the method reads itself
    argv = ["finetune", "--offline", str(logs), "--init", str(tmp_path / "init.pt"), "--algo", "copy",
            "--out", str(tmp_path / "out")]  # fmt: skip
    assert cli.main(argv) == 0
    (job,) = CopyIncumbent.seen
    assert job.data is None and job.logs == [logs] and job.preset == "uni_o4"  # no dataset was built
    assert judged == [(tmp_path / "out" / "candidate" / "policy.pt", (1.0, 0.5))]
    source = json.loads((tmp_path / "out" / "finetune.json").read_text())
    assert source["algo"] == "copy" and len(source["data_hash"]) == 16
    obs = torch.randn(3, spec.observation.dim)
    torch.testing.assert_close(load_policy(judged[0][0], spec).actor(obs), actor(obs))


def test_the_calibrated_gate_keeps_the_incumbent_when_the_logs_cannot_calibrate_a_simulator(spec, tmp_path,
                                                                                             monkeypatch):  # fmt: skip
    """The default gate judges in a simulator calibrated from the logs; logs it cannot calibrate from leave no
    simulator to trust, so the candidate is refused with the reason, and the incumbent stays the one to deploy."""
    monkeypatch.setitem(registry.METHODS, "copy", registry.Registered(CopyIncumbent, "uni_o4", "uni_o4_quick"))
    save_policy(ActorMLP(spec.observation.dim, spec.num_joints, [8]), spec, tmp_path / "init.pt")
    logs = tmp_path / "logs"
    (logs / "run").mkdir(parents=True)
    (logs / "run" / "episode_000000.g1log").write_bytes(b"")  # no policy steps to calibrate from
    argv = ["finetune", "--offline", str(logs), "--init", str(tmp_path / "init.pt"), "--algo", "copy",
            "--out", str(tmp_path / "out")]  # fmt: skip
    assert cli.main(argv) == 0
    gate = json.loads((tmp_path / "out" / "gate.json").read_text())
    assert gate["evaluator"] == "calibrated" and not gate["passed"]
    assert "could not calibrate" in gate["reasons"][0] and gate["deployed"] == str(tmp_path / "init.pt")
    assert (tmp_path / "out" / "deploy" / "policy.pt").is_file()
