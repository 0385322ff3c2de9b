"""uni_o4.baselines: IQL, Cal-QL and O3F on hand-made batches — the properties that make each one what it is."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robot_spec.config import ConfigError
from robot_spec.policy_io import ActorMLP, load_policy, save_policy
from uni_o4.baselines import Algorithm, CalQL, SafeActionSet, mixed_batch, project_to_safe_set, train
from uni_o4.registry import BASELINES as ALGORITHMS
from uni_o4.registry import load_baseline_config, make_algorithm
from uni_o4.baselines.common import MaybeCompiled, native_bfloat16, resolve_precision
from uni_o4.critics import expectile_loss
from uni_o4.dataset import Batch
from uni_o4.synthetic import synthetic_dataset

TINY = {"actor_hidden_dims": [32, 32], "critic_hidden_dims": [32, 32], "batch_size": 64}


@pytest.fixture(scope="module")
def safe_set():
    return SafeActionSet.for_robot("go1")


@pytest.fixture(scope="module")
def data(spec):
    # 45-d observations, 12 joints; short episodes, some ending in a fall (true terminal), the rest by timeout.
    return synthetic_dataset(spec.observation.dim, spec.num_joints, episodes=8, length=40, fall_threshold=0.9)


def build(name, data, safe_set, **overrides):
    eager = {} if name == "calql" else {"compile": False}  # IQL's compiled path has its own test
    return make_algorithm(name, load_baseline_config(name, overrides={**TINY, **eager, **overrides}), data, safe_set)


def constant_output(linear: nn.Module, value: float) -> None:
    """Make a (possibly ensemble) last layer output `value` whatever its input."""
    with torch.no_grad():
        linear.weight.zero_()
        linear.bias.fill_(value)


def hand_batch(n=8, obs_dim=45, action_dim=12, terminals=None, returns=None, rewards=None) -> Batch:
    g = torch.Generator().manual_seed(1)
    return Batch(
        obs=torch.randn(n, obs_dim, generator=g), actions=torch.randn(n, action_dim, generator=g),
        rewards=torch.arange(n, dtype=torch.float32) if rewards is None else rewards,
        next_obs=torch.randn(n, obs_dim, generator=g),
        terminals=torch.zeros(n) if terminals is None else terminals,
        returns=torch.zeros(n) if returns is None else returns,
    )  # fmt: skip


# --------------------------------------------------------------------------------------------- configs
def test_configs_load_and_reject_typos(tmp_path):
    for name in ALGORITHMS:
        cfg = load_baseline_config(name)
        assert cfg.discount == 0.99 and cfg.batch_size == 256
    assert load_baseline_config("o3f").num_q >= 2
    bad = tmp_path / "iql.yaml"
    bad.write_text("expectle: 0.7\n")
    with pytest.raises(ConfigError, match="expectle"):
        load_baseline_config("iql", bad)
    with pytest.raises(ValueError, match="unknown baseline"):
        load_baseline_config("sac")


# --------------------------------------------------------------------------------------------- IQL
def test_expectile_loss_weights_underestimates_more():
    diff = torch.tensor([1.0])  # target above the prediction: the prediction is too low
    assert expectile_loss(diff, 0.7).item() == pytest.approx(0.7)
    assert expectile_loss(-diff, 0.7).item() == pytest.approx(0.3)
    # Minimising it over targets {0, 1} lands on the 0.7-expectile (0.7), above the mean (0.5).
    v = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([v], lr=0.5)
    for _ in range(300):
        opt.zero_grad()
        expectile_loss(torch.tensor([0.0, 1.0]) - v, 0.7).backward()
        opt.step()
    assert v.item() == pytest.approx(0.7, abs=1e-3)


def test_iql_value_loss_is_the_asymmetric_one(data, safe_set):
    iql = build("iql", data, safe_set)
    constant_output(iql.q_target.net.layers[-1], 0.0)  # target Q ≡ 0
    batch = hand_batch()
    constant_output(iql.value.net[-1], 1.0)  # V above the target: the light side
    assert iql.losses(batch)["value_loss"].item() == pytest.approx(0.3)
    constant_output(iql.value.net[-1], -1.0)  # V below the target: the heavy side
    assert iql.losses(batch)["value_loss"].item() == pytest.approx(0.7)


def test_terminals_stop_bootstrapping_and_timeouts_do_not(data, safe_set):
    terminals = torch.tensor([0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 1.0, 0.0])
    batch = hand_batch(terminals=terminals)
    iql = build("iql", data, safe_set)
    constant_output(iql.value.net[-1], 10.0)  # V(s') ≡ 10
    calql = build("calql", data, safe_set)
    constant_output(calql.q_target.net.layers[-1], 5.0)  # Q_target(s', ·) ≡ 5
    for algo, next_value in ((iql, 10.0), (calql, 5.0)):
        expected = batch.rewards + 0.99 * next_value * (1.0 - terminals)
        torch.testing.assert_close(algo.td_target(batch), expected)
        assert torch.equal(algo.td_target(batch)[terminals == 1], batch.rewards[terminals == 1])


# --------------------------------------------------------------------------------------------- Cal-QL
def test_calql_floor_binds_exactly_where_the_return_exceeds_q(data, safe_set):
    calql = build("calql", data, safe_set)
    b = 2.0
    constant_output(calql.q.net.layers[-1], b)  # Q ≡ b at every action
    returns = torch.tensor([b + 1, b - 1, b + 3, b, b - 5, b + 0.5, -100.0, 100.0])
    terms = calql.conservative_terms(hand_batch(returns=returns))
    binds = returns > b
    assert torch.equal(terms.policy_q, torch.full_like(terms.policy_q, b))
    torch.testing.assert_close(terms.policy_q_calibrated[:, :, binds], returns[binds].expand(2, 20, -1))
    assert torch.equal(terms.policy_q_calibrated[:, :, ~binds], terms.policy_q[:, :, ~binds])
    # The push-down term is built from those values: logsumexp over uniform and (floored) policy samples.
    log_uniform = -(safe_set.high - safe_set.low).log().sum()
    floored = torch.where(binds, returns, torch.tensor(b))
    expected = torch.logsumexp(
        torch.cat([torch.full((10, 8), b) - log_uniform, floored - terms.policy_log_prob]), dim=0
    )
    torch.testing.assert_close(terms.push_down, expected.expand(2, -1))
    assert calql.losses(hand_batch(returns=returns))["calibration_rate"].item() == pytest.approx(binds.float().mean())


def test_calql_floor_per_sample_on_a_real_critic(data, safe_set):
    """With a trained-from-scratch (non-constant) Q, the floor binds sample by sample where G > Q(s, a_π)."""
    calql = build("calql", data, safe_set)
    batch = hand_batch()
    state = calql.generator.get_state()
    raw = calql.conservative_terms(batch).policy_q  # (2, 20, B), G = 0 everywhere
    returns = raw.median(dim=1).values[0]  # per row: between that row's Q values
    calql.generator.set_state(state)  # the same sampled actions again
    terms = calql.conservative_terms(Batch(**{**batch.__dict__, "returns": returns}))
    torch.testing.assert_close(terms.policy_q, raw)
    expected = torch.where(returns > raw, returns.expand_as(raw), raw)
    assert torch.equal(terms.policy_q_calibrated, expected)
    binding = returns > raw
    assert binding.any() and (~binding).any()


def test_calql_bfloat16_penalty_keeps_the_td_side_exact_and_the_gradient_close(data, safe_set):
    """bfloat16 touches only the sampled actions' Q: Q at the data and the TD target are bit-equal to float32,
    and the critic's gradient points the same way (the push-down tolerates 3 significant digits)."""
    batch = data.sample(64, torch.Generator().manual_seed(3))
    runs = {}
    for precision in ("float32", "bfloat16"):
        calql = build("calql", data, safe_set, penalty_precision=precision)
        assert calql.penalty_dtype == getattr(torch, precision)
        losses = calql.losses(batch)
        losses["critic_loss"].backward()
        grad = torch.cat([p.grad.flatten() for p in calql.q.parameters()])
        runs[precision] = (calql.conservative_terms(batch), losses, grad)
    (exact, exact_losses, exact_grad), (fast, fast_losses, fast_grad) = runs["float32"], runs["bfloat16"]
    assert torch.equal(fast.data_q, exact.data_q) and torch.equal(fast_losses["td_loss"], exact_losses["td_loss"])
    assert fast.random_q.dtype == torch.float32 and not torch.equal(fast.random_q, exact.random_q)
    torch.testing.assert_close(fast.push_down, exact.push_down, rtol=2e-2, atol=2e-2)
    assert F.cosine_similarity(fast_grad, exact_grad, dim=0) > 0.99


def test_precision_auto_follows_the_hardware_and_typos_are_refused():
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu) == (torch.bfloat16 if native_bfloat16(cpu) else torch.float32)
    assert resolve_precision("float32", cpu) == torch.float32
    with pytest.raises(ValueError, match="precision"):
        resolve_precision("fp8", cpu)
    with pytest.raises(ConfigError, match="penalty_precision"):
        load_baseline_config("calql", overrides={"penalty_precision": "half"})


def test_iql_compiles_in_a_warm_up_that_changes_nothing_and_then_updates_as_eager(data, safe_set):
    eager, compiled = (build("iql", data, safe_set, seed=3, compile=flag) for flag in (False, True))
    calls, compiled_losses = [], compiled.training_losses.compiled
    compiled.training_losses.compiled = lambda *args: calls.append(len(args)) or compiled_losses(*args)
    g = torch.Generator().manual_seed(4)
    compiled.warm_up(data.sample(64, g))
    assert calls == [1], "the warm-up did not go through the compiled losses"
    assert compiled.optimizer.state_dict()["state"] == {} and compiled.num_updates == 0
    for p_eager, p_compiled in zip(eager.nets.parameters(), compiled.nets.parameters(), strict=True):
        assert p_compiled.grad is None and torch.equal(p_compiled, p_eager)
    for _ in range(3):
        batch = data.sample(64, g)
        expected, got = eager.update(batch), compiled.update(batch)
        assert got == pytest.approx(expected, rel=1e-4, abs=1e-6)
    assert len(calls) == 4, "compilation failed and fell back to eager"
    for p_eager, p_compiled in zip(eager.nets.parameters(), compiled.nets.parameters(), strict=True):
        torch.testing.assert_close(p_compiled, p_eager, rtol=1e-4, atol=1e-5)


def test_a_failed_compilation_falls_back_to_eager_once_and_real_errors_still_raise(monkeypatch):
    def no_compiler(fn):
        def broken(*args):
            raise RuntimeError("InvalidCxxCompiler: no working C++ compiler found")

        return broken

    monkeypatch.setattr(torch, "compile", no_compiler)
    add_one = MaybeCompiled(lambda x: x + 1, enabled=True)
    with pytest.warns(UserWarning, match="torch.compile failed"):
        assert add_one(1) == 2
    assert add_one.compiled is None and add_one(2) == 3  # eager from now on, no second warning
    with pytest.raises(ZeroDivisionError):
        MaybeCompiled(lambda x: 1 / x, enabled=True)(0)


def test_calql_without_calibration_is_plain_cql(data, safe_set):
    cql = build("calql", data, safe_set, calibrated=False)
    terms = cql.conservative_terms(hand_batch(returns=torch.full((8,), 1e3)))
    assert torch.equal(terms.policy_q_calibrated, terms.policy_q)


def test_squashed_policy_stays_in_the_box_and_zero_maps_to_zero(data, safe_set):
    calql = build("calql", data, safe_set)
    u = torch.tensor([[-50.0] * 12, [0.0] * 12, [50.0] * 12])
    squashed = calql.policy.squash(u)
    torch.testing.assert_close(squashed[0], safe_set.low)
    assert torch.equal(squashed[1], torch.zeros(12))
    torch.testing.assert_close(squashed[2], safe_set.high)
    actions, log_prob = calql.policy.sample(data.obs[:16], 4, calql.generator)
    assert actions.shape == (4, 16, 12) and log_prob.shape == (4, 16) and torch.isfinite(log_prob).all()
    assert safe_set.contains(actions).all()


# --------------------------------------------------------------------------------------------- learning
@pytest.mark.parametrize(("name", "losses"), [("iql", ["q_loss", "actor_loss"]), ("calql", ["critic_loss"])])
def test_losses_fall_on_a_tiny_dataset(data, safe_set, name, losses):
    algo = build(name, data, safe_set)
    g = torch.Generator().manual_seed(0)
    history = train(algo, lambda: data.sample(64, g), 200)
    for key in losses:
        first = sum(h[key] for h in history[:20]) / 20
        last = sum(h[key] for h in history[-20:]) / 20
        assert last < first, f"{name} {key}: {first:.3f} -> {last:.3f}"
    assert all(torch.isfinite(torch.tensor(list(h.values()))).all() for h in history)


def test_same_seed_same_run_and_exact_resume(data, safe_set):
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    a, b = build("calql", data, safe_set, seed=7), build("calql", data, safe_set, seed=7)
    assert train(a, lambda: data.sample(32, g1), 3) == train(b, lambda: data.sample(32, g2), 3)
    state = copy.deepcopy(a.state_dict())  # state_dict holds live tensors, as in PyTorch
    batch = data.sample(32, g1)
    after = a.update(batch)
    b.load_state_dict(state)
    assert b.update(batch) == after
    assert build("calql", data, safe_set, seed=8).update(batch) != after


# --------------------------------------------------------------------------------------------- interface
@pytest.mark.parametrize("name", list(ALGORITHMS))
def test_common_interface(name, data, safe_set):
    algo = build(name, data, safe_set)
    assert isinstance(algo, Algorithm)
    obs = data.obs[:5]
    last = torch.zeros(5, 12)
    assert algo.act(obs, deterministic=False, last_action=last).shape == (5, 12)
    assert algo.act(obs[0], deterministic=True).shape == (12,)
    actor = algo.export_actor()
    torch.testing.assert_close(actor(obs), algo.act(obs, deterministic=True))


def test_iql_export_goes_through_the_policy_file_format(data, safe_set, spec, tmp_path):
    algo = build("iql", data, safe_set)
    save_policy(algo.export_actor(), spec, tmp_path / "policy.pt", {"source": "iql"})
    loaded = load_policy(tmp_path / "policy.pt", spec)
    torch.testing.assert_close(loaded(data.obs[:4]), algo.act(data.obs[:4], deterministic=True))


def test_o3f_starts_from_a_pretrained_actor(data, safe_set, spec):
    torch.manual_seed(0)
    actor = ActorMLP(spec.observation.dim, spec.num_joints, [16, 16], "elu")
    actor.obs_std.fill_(0.5)
    cfg = load_baseline_config("o3f", overrides=TINY)
    o3f = make_algorithm("o3f", cfg, data, safe_set, init_actor=actor)
    torch.testing.assert_close(o3f.export_actor()(data.obs[:4]), actor(data.obs[:4]))  # weights and normalisation


def test_a_refused_policy_restarts_from_the_deployed_one_with_its_critics(data, safe_set, spec):
    torch.manual_seed(0)
    actor, deployed = (ActorMLP(spec.observation.dim, spec.num_joints, [16, 16], "elu") for _ in range(2))
    deployed.obs_mean.fill_(0.3)
    cfg = load_baseline_config("o3f", overrides=TINY)
    o3f = make_algorithm("o3f", cfg, data, safe_set, init_actor=actor)
    train(o3f, lambda: data.sample(cfg.batch_size), 3)
    q_before = copy.deepcopy(o3f.q.state_dict())
    o3f.restart_policy_mean(deployed)
    torch.testing.assert_close(o3f.export_actor()(data.obs[:4]), deployed(data.obs[:4]))
    assert all(torch.equal(q_before[k], v) for k, v in o3f.q.state_dict().items())


def test_mixed_batch_takes_the_ratio_from_each_source(data):
    online = synthetic_dataset(45, 12, episodes=2, length=20, seed=5)
    online.obs.fill_(7.0)  # marks online rows
    batch = mixed_batch(data, online, 64, 0.5, torch.Generator().manual_seed(0))
    from_online = (batch.obs == 7.0).all(-1)
    assert len(batch.obs) == 64 and int(from_online.sum()) == 32 and bool(from_online[32:].all())
    assert len(mixed_batch(data, None, 64, 0.5).obs) == 64
    with pytest.raises(ValueError, match="mix_ratio"):
        mixed_batch(data, online, 64, 1.5)


def test_make_algorithm_refuses_a_discount_mismatch(data, safe_set):
    cfg = load_baseline_config("iql", overrides={**TINY, "discount": 0.9})
    with pytest.raises(ValueError, match="discount"):
        make_algorithm("iql", cfg, data, safe_set)
    with pytest.raises(ValueError, match="pretrained"):
        make_algorithm("calql", load_baseline_config("calql"), data, safe_set, init_actor=nn.Linear(1, 1))


# --------------------------------------------------------------------------------------------- safe set
def joint_limits(spec) -> tuple[torch.Tensor, torch.Tensor]:
    """The tighter of the URDF range and the SDK clamp, per joint (float64)."""
    sdk_lower = torch.as_tensor(spec.per_joint(spec.limits.sdk_position_lower))
    sdk_upper = torch.as_tensor(spec.per_joint(spec.limits.sdk_position_upper))
    lower, upper = torch.as_tensor(spec.position_lower), torch.as_tensor(spec.position_upper)
    return lower.maximum(sdk_lower), upper.minimum(sdk_upper)


def test_safe_box_comes_from_the_spec(spec, safe_set):
    lower, upper = joint_limits(spec)
    default, scale = torch.as_tensor(spec.default_pose), spec.control.action_scale
    targets_low, targets_high = default + scale * safe_set.low.double(), default + scale * safe_set.high.double()
    assert ((targets_low >= lower - 1e-6) & (targets_high <= upper + 1e-6)).all()
    at_limit = (targets_low - lower).abs() < 1e-6, (targets_high - upper).abs() < 1e-6
    clipped = (safe_set.low == -spec.control.action_clip) | (safe_set.high == spec.control.action_clip)
    assert (at_limit[0] | clipped).all() and (at_limit[1] | clipped).all()  # as wide as the limits allow


def test_projection_is_the_identity_on_safe_actions_and_limits_win_a_conflict(safe_set):
    low, high, delta = safe_set.low, safe_set.high, 0.5
    last = torch.zeros(12)
    inside = last + 0.4 * torch.ones(12)
    assert torch.equal(project_to_safe_set(inside, low, high, delta, last), inside)
    far_last = high + 3.0  # an impossible last action: the boxes do not meet
    out = project_to_safe_set(far_last + 1.0, low, high, delta, far_last)
    assert torch.equal(out, high)


def test_o3f_never_leaves_the_safe_set(data, safe_set, spec):
    tight = SafeActionSet(safe_set.low, safe_set.high, max_delta=0.3)
    o3f = make_algorithm("o3f", load_baseline_config("o3f", overrides={**TINY, "candidate_std_scale": 20.0}),
                         data, tight)  # fmt: skip
    g = torch.Generator().manual_seed(0)
    default, scale = torch.as_tensor(spec.default_pose, dtype=torch.float32), spec.control.action_scale
    lower, upper = joint_limits(spec)
    for _ in range(20):
        obs = 5.0 * torch.randn(64, 45, generator=g)
        last = tight.low + (tight.high - tight.low) * torch.rand(64, 12, generator=g)  # anywhere in the box
        actions = o3f.select_action(obs, last)
        assert tight.contains(actions, last).all()
        targets = (default + scale * actions).double()
        assert ((targets >= lower - 1e-5) & (targets <= upper + 1e-5)).all()
        for algo_action in (o3f.act(obs, True, last), o3f.act(obs[0], False, last[0])):
            assert tight.contains(algo_action, last if algo_action.dim() == 2 else last[0]).all()


class DistanceQ(nn.Module):
    """A fake Q ensemble: head i gives −|a − target|² + offset_i·a_0 (heads disagree more as |a_0| grows)."""

    def __init__(self, target: torch.Tensor, offsets: list[float]):
        super().__init__()
        self.target, self.offsets = target, torch.tensor(offsets)

    def forward(self, state: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        closeness = -(action - self.target).square().sum(-1)
        return closeness + self.offsets[:, None] * action[:, 0]


def test_o3f_picks_the_best_candidate_and_optimism_prefers_disagreement(data, safe_set):
    o3f = build("o3f", data, safe_set, optimism=0.0, num_candidates=64)
    target = torch.full((12,), 0.8)
    o3f.q = DistanceQ(target, [0.0, 0.0, 0.0, 0.0])
    obs, last = data.obs[:32], torch.zeros(32, 12)
    state = o3f.generator.get_state()
    chosen = o3f.select_action(obs, last)
    o3f.generator.set_state(state)
    candidates = o3f.candidates(obs, last)
    scores = o3f.scores(obs, candidates)
    chosen_scores = o3f.scores(obs, chosen[None])[0]
    torch.testing.assert_close(chosen_scores, scores.max(0).values)  # λ = 0: the highest mean Q wins
    mean_action = candidates[0]
    assert ((chosen - target).norm(dim=-1) <= (mean_action - target).norm(dim=-1)).all()

    # λ > 0 with heads that agree on nothing but the sign of a_0: the uncertain side (any a_0 ≠ 0) is preferred.
    o3f.q = DistanceQ(torch.zeros(12), [-3.0, -1.0, 1.0, 3.0])
    o3f.cfg.optimism = 10.0
    chosen = o3f.select_action(obs, last)
    o3f.cfg.optimism = 0.0
    cautious = o3f.select_action(obs, last)
    assert chosen[:, 0].abs().mean() > cautious[:, 0].abs().mean()


def test_o3f_needs_the_critic_measurements_it_was_trained_with(spec, safe_set):
    data = synthetic_dataset(spec.observation.dim, spec.num_joints, episodes=2, length=20, critic_dim=3)
    o3f = build("o3f", data, safe_set)
    with pytest.raises(ValueError, match="48-d states but got 45"):
        o3f.select_action(data.obs[:2])
    assert o3f.select_action(data.obs[:2], critic_obs=data.critic_obs[:2]).shape == (2, 12)


def test_calql_act_respects_the_rate_limit(data, safe_set):
    tight = SafeActionSet(safe_set.low, safe_set.high, max_delta=0.05)
    calql = make_algorithm("calql", load_baseline_config("calql", overrides=TINY), data, tight)
    assert isinstance(calql, CalQL)
    last = torch.full((16, 12), 0.3)
    assert tight.contains(calql.act(data.obs[:16], False, last), last).all()
