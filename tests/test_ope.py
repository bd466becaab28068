"""Logged-policy evaluation against simulated truth (methods/ope, configs/policy.py)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from configs.policy import load_policy, parse_policy
from configs.questions import ConfigError
from methods.ope import choose_actions, estimate_policy_value
from methods.result import MethodRefusal

ACTIONS = np.array(["small_model", "large_model", "human"])
POLICY_TEXT = """
rules:
  - when: {risk: {gt: 1.0}}
    action: human
  - when: {difficulty: {gt: -0.3}}
    action: large_model
default: small_model
"""
POLICY = parse_policy(POLICY_TEXT).as_plain()


def _mean_reward(risk, difficulty):
    """n x 3 expected reward of each action (small, large, human): nonlinear in the context."""
    small = 0.8 - 0.5 * difficulty - 0.3 * risk ** 2
    large = 0.6 + 0.1 * difficulty - 0.15 * risk ** 2
    human = 0.4 + 0.2 * risk
    return np.stack([small, large, human], axis=1)


def simulate(n: int, seed: int, uniform_logger: bool = False) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    risk, difficulty = rng.normal(size=n), rng.normal(size=n)
    if uniform_logger:
        logits = np.zeros((n, 3))
    else:  # the logger routes mostly small models, and hard or risky rows up: confounded logs
        logits = np.stack([1.0 - 0.8 * difficulty, 0.2 * difficulty, -1.0 + 0.8 * risk], axis=1)
    prob = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    a = (rng.random(n)[:, None] > prob.cumsum(1)).sum(1).clip(0, 2)
    mu = _mean_reward(risk, difficulty)
    reward = mu[np.arange(n), a] + rng.normal(scale=0.5, size=n)
    return pd.DataFrame({"risk": risk, "difficulty": difficulty, "action": ACTIONS[a],
                         "propensity": prob[np.arange(n), a], "reward": reward})


def true_value(n: int = 2_000_000, seed: int = 12345) -> float:
    rng = np.random.default_rng(seed)
    risk, difficulty = rng.normal(size=n), rng.normal(size=n)
    choice = np.where(risk > 1.0, 2, np.where(difficulty > -0.3, 1, 0))
    return float(_mean_reward(risk, difficulty)[np.arange(n), choice].mean())


TRUTH = true_value()


def test_rules_first_match_wins_and_missing_never_matches():
    df = pd.DataFrame({"risk": [2.0, 2.0, 0.0, np.nan, 0.0], "difficulty": [0.0, -1, 0.0, 0.0, -1.0]})
    assert list(choose_actions(df, POLICY)) == ["human", "human", "large_model", "large_model", "small_model"]
    p = parse_policy("{rules: [{when: {channel: {in: [chat, email]}, hour: {ge: 9, lt: 17}}, action: 2}], default: 0}")
    df = pd.DataFrame({"channel": ["chat", "voice", "email", None], "hour": [10, 10, 17, 10]})
    assert list(choose_actions(df, p.as_plain())) == ["2", "0", "0", "0"]


@pytest.mark.parametrize("text, field", [
    ("{rules: [{when: {risk: {gt: 1}}, action: human}]}", "default"),
    ("{rules: [{when: {risk: {between: 1}}, action: human}], default: a}", "between"),
    ("{rules: [{when: {'risk; DROP': {gt: 1}}, action: human}], default: a}", "risk; DROP"),
    ("{rules: [{when: {risk: {}}, action: human}], default: a}", "rules.0.when.risk"),
    ("{rules: [{when: {risk: {gt: x}}, action: human}], default: a}", "gt"),
    ("{rules: [{when: {risk: {gt: 1}}, action: 'rm -rf'}], default: a}", "action"),
    ("[1, 2]", "mapping"),
])
def test_bad_policies_are_named(text, field):
    with pytest.raises(ConfigError, match=field.replace(";", ".")):
        parse_policy(text)


def test_policy_file_yaml_and_json(tmp_path):
    (tmp_path / "p.yaml").write_text(POLICY_TEXT)
    (tmp_path / "p.json").write_text(json.dumps(POLICY))
    assert load_policy(tmp_path / "p.yaml").as_plain() == load_policy(tmp_path / "p.json").as_plain() == POLICY


def test_refuses_without_propensities():
    df = simulate(500, 0).drop(columns="propensity")
    with pytest.raises(MethodRefusal, match="no logging propensities"):
        estimate_policy_value(df, action="action", reward="reward", propensity=None, policy=POLICY)
    with pytest.raises(MethodRefusal, match="no logging propensities"):
        estimate_policy_value(df.assign(propensity=np.nan), action="action", reward="reward",
                              propensity="propensity", policy=POLICY)
    with pytest.raises(MethodRefusal, match="never took"):
        estimate_policy_value(simulate(500, 0), action="action", reward="reward", propensity="propensity",
                              policy={"rules": [], "default": "robot"})


def test_dr_and_ips_cover_the_true_value_over_seeds_and_the_naive_mean_does_not():
    seeds = range(200)
    cover = {"doubly_robust": 0, "ips": 0, "snips": 0}
    naive_cover, naive_gap = 0, []
    for s in seeds:
        res = estimate_policy_value(simulate(2000, s), action="action", reward="reward", propensity="propensity",
                                    policy=POLICY, context=["risk", "difficulty"], seed=s)
        table = res.extras["estimators"].set_index("estimator")
        for k in cover:
            cover[k] += table.loc[k, "ci_low"] <= TRUTH <= table.loc[k, "ci_high"]
        naive_cover += table.loc["logged_mean", "ci_low"] <= TRUTH <= table.loc["logged_mean", "ci_high"]
        naive_gap.append(res.naive_estimate - TRUTH)
    rates = {k: v / len(seeds) for k, v in cover.items()}
    print(f"truth {TRUTH:.4f} coverage {rates} naive coverage {naive_cover / len(seeds):.2f} "
          f"naive bias {np.mean(naive_gap):+.4f}")
    assert 0.91 <= rates["doubly_robust"] <= 0.99
    assert 0.91 <= rates["ips"] <= 0.99
    assert naive_cover / len(seeds) < 0.05 and abs(np.mean(naive_gap)) > 0.1


def test_overlap_warnings():
    ok = estimate_policy_value(simulate(3000, 1, uniform_logger=True), action="action", reward="reward",
                               propensity="propensity", policy=POLICY, context=["risk", "difficulty"])
    assert all(d.passed for d in ok.diagnostics if d.check == "policy_overlap")
    df = simulate(3000, 1)
    # a logger that almost never sent anyone to a human where the candidate does
    df.loc[df.action == "human", "propensity"] *= 0.02
    bad = estimate_policy_value(df, action="action", reward="reward", propensity="propensity",
                                policy={"rules": [], "default": "human"}, context=["risk"])
    fed = {d.name: d for d in bad.diagnostics if d.check == "policy_overlap"}
    assert not fed["rare_action_share"].passed and not fed["effective_sample_size"].passed
    assert bad.extras["effective_sample_size"] < 300


def test_cli_ope_json_and_refusal(tmp_path, capsys):
    from convocausal.cli import main

    simulate(3000, 3).to_parquet(tmp_path / "logs.parquet")
    (tmp_path / "p.yaml").write_text(POLICY_TEXT)
    args = ["estimate", "ope", "--data", str(tmp_path / "logs.parquet"), "--action", "action", "--reward", "reward",
            "--policy", str(tmp_path / "p.yaml")]
    assert main([*args, "--propensity", "propensity", "--context", "risk,difficulty", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["method"] == "logged_policy_evaluation"
    assert {"ips", "snips", "logged_mean", "effective_sample_size"} <= set(out)
    assert out["checks"]["policy_overlap"] == "passed"
    assert main(args) == 2  # no --propensity: refused, with the reason
    assert "no logging propensities" in capsys.readouterr().err
    (tmp_path / "bad.yaml").write_text("rules: [{when: {tier: {gt: 1}}, action: human}]\ndefault: small_model\n")
    assert main([*args[:-1], str(tmp_path / "bad.yaml"), "--propensity", "propensity"]) == 2
    assert "tier" in capsys.readouterr().err


def _per_action(df: pd.DataFrame, seed: int) -> pd.DataFrame:
    """The logs with one logging-probability column per action (``p_<action>``), as a router records them."""
    rng = np.random.default_rng(seed)
    out = df.copy()
    logits = np.stack([1.0 - 0.8 * df.difficulty, 0.2 * df.difficulty, -1.0 + 0.8 * df.risk], axis=1)
    prob = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    a = (rng.random(len(df))[:, None] > prob.cumsum(1)).sum(1).clip(0, 2)
    mu = _mean_reward(df.risk.to_numpy(), df.difficulty.to_numpy())
    out["action"] = ACTIONS[a]
    out["reward"] = mu[np.arange(len(df)), a] + rng.normal(scale=0.5, size=len(df))
    for j, name in enumerate(ACTIONS):
        out[f"p_{name}"] = prob[:, j]
    return out.drop(columns="propensity")


def test_per_action_propensity_columns_give_the_same_value_and_an_exact_overlap_share():
    df = _per_action(simulate(4000, 5), 5)
    by_prefix = estimate_policy_value(df, action="action", reward="reward", propensity=None, propensity_prefix="p_",
                                      policy=POLICY, context=["risk", "difficulty"])
    logged = df.assign(propensity=[df.loc[i, f"p_{a}"] for i, a in zip(df.index, df.action)])
    by_column = estimate_policy_value(logged, action="action", reward="reward", propensity="propensity",
                                      policy=POLICY, context=["risk", "difficulty"])
    assert by_prefix.estimate == pytest.approx(by_column.estimate)
    assert by_prefix.extras["ips"] == pytest.approx(by_column.extras["ips"])
    assert by_prefix.ci_low <= TRUTH <= by_prefix.ci_high
    assert by_prefix.extras["propensity_columns"] == {a: f"p_{a}" for a in ACTIONS}
    rare = next(d for d in by_prefix.diagnostics if d.name == "rare_action_share")
    assert "read from the logged per-action probabilities" in rare.message
    with pytest.raises(MethodRefusal, match="no column starts with `q_`"):
        estimate_policy_value(df, action="action", reward="reward", propensity=None, propensity_prefix="q_",
                              policy=POLICY)
    with pytest.raises(MethodRefusal, match="p_human"):
        estimate_policy_value(df.drop(columns="p_human"), action="action", reward="reward", propensity=None,
                              propensity_prefix="p_", policy=POLICY)


def test_cli_policy_as_the_issue_writes_it(tmp_path, capsys):
    from convocausal.cli import main

    _per_action(simulate(3000, 7), 7).to_parquet(tmp_path / "logs.parquet")
    (tmp_path / "p.yaml").write_text(POLICY_TEXT)
    args = ["estimate", "policy", "--data", str(tmp_path / "logs.parquet"), "--action", "action", "--reward",
            "reward", "--policy", str(tmp_path / "p.yaml")]
    assert main([*args, "--propensity-prefix", "p_", "--covariates", "risk,difficulty", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["method"] == "logged_policy_evaluation" and out["ci_low"] <= TRUTH <= out["ci_high"]
    assert {"ips", "snips", "logged_mean", "effective_sample_size"} <= set(out)
    assert not out["ci_low"] <= out["logged_mean"] <= out["ci_high"]
    assert main([*args, "--propensity-prefix", "logp_"]) == 2  # no such columns: refused, with the reason
    assert "no logging propensities" in capsys.readouterr().err


def test_policy_file_is_data_not_code(tmp_path):
    (tmp_path / "evil.yaml").write_text("!!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ConfigError):
        load_policy(tmp_path / "evil.yaml")
    with pytest.raises(MethodRefusal, match="compares numbers"):
        choose_actions(pd.DataFrame({"risk": ["high", "low"]}), POLICY)


@pytest.mark.slow
def test_coverage_study_larger():
    hits = {"doubly_robust": [], "ips": [], "snips": []}
    for s in range(1000, 1800):
        res = estimate_policy_value(simulate(2000, s), action="action", reward="reward", propensity="propensity",
                                    policy=POLICY, context=["risk", "difficulty"], seed=s)
        table = res.extras["estimators"].set_index("estimator")
        for k, v in hits.items():
            v.append(table.loc[k, "ci_low"] <= TRUTH <= table.loc[k, "ci_high"])
    rates = {k: float(np.mean(v)) for k, v in hits.items()}
    print(f"coverage over 800 seeds: {rates}")
    assert all(0.92 <= r <= 0.98 for r in rates.values())
