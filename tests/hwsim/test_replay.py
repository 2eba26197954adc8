import numpy as np
import pytest

from hwsim.closed_form import evaluate
from hwsim.costs import build_costs
from hwsim.replay import replay
from hwsim.trace import synthetic_trace

from hwsim_helpers import CANDS, TINY, arch, make_trace


def _trace(n=203, seed=1):
    el, cor = synthetic_trace(n, 12, CANDS, seed=seed)
    return make_trace(el, correct=cor)


@pytest.mark.parametrize("serial", [True, False])
@pytest.mark.parametrize("policy", ["static", "stream"])
@pytest.mark.parametrize("df", ["os", "ws", "is"])
def test_replay_equals_closed_form_without_contention(policy, df, serial, monkeypatch):
    # serial: one event per group and layer; False forces the per-stage path with resources
    import hwsim.replay
    if not serial:
        monkeypatch.setattr(hwsim.replay, "_serial", lambda arch, costs: False)
    a = arch(batch__policy=policy, batch__size=8, array__dataflow=df)
    tr = _trace()
    c = build_costs(a, TINY, tr.num_classes, a.effective_batch)
    r = replay(a, c, tr)
    f = evaluate(c, tr, policy, 8)
    assert r["makespan_cycles"] == f["makespan_cycles"]
    np.testing.assert_allclose(r["_latency_us"], f["_latency_us"], rtol=0, atol=0)
    assert r["energy_pj"] == f["energy_pj"]
    assert r["busy_cycles"] == f["busy_cycles"]


def test_all_exit_at_8_known_cycles():
    a = arch(batch__size=4)
    tr = make_trace([8] * 12)                   # 3 full groups, all exit at layer 8
    c = build_costs(a, TINY, 25, 4)
    B = 4
    per_group = (c.array_cycles["patch"][B] + c.vector_cycles["patch"][B]
                 + 8 * (c.array_cycles["block"][B] + c.vector_cycles["block"][B])
                 + 3 * (c.array_cycles["head"][B] + c.vector_cycles["head"][B] + c.exit_cycles[B]))  # heads at 4, 6, 8
    for policy in ("static", "regroup"):
        r = replay(arch(batch__size=4, batch__policy=policy), c, tr)
        assert r["makespan_cycles"] == 3 * per_group
    assert r["macs"] == 12 * (c.macs["patch"][1] + 8 * c.macs["block"][1] + 3 * c.macs["head"][1])


def test_holes_cost_time_regroup_recovers_it():
    # in each group of 4: one sample runs to full depth, three exit at 4
    el = np.array([4, 4, 4, 12] * 16)
    tr = make_trace(el)
    static = replay(arch(batch__size=4, batch__policy="static"), build_costs(arch(), TINY, 25, 4), tr)
    regroup = replay(arch(batch__size=4, batch__policy="regroup"), build_costs(arch(), TINY, 25, 4), tr)
    full = replay(arch(batch__size=4, batch__policy="static"), build_costs(arch(), TINY, 25, 4), tr.full_depth())
    assert regroup["makespan_cycles"] < static["makespan_cycles"]
    # static with holes: no time saved over full depth except heads overhead (it is slower)
    assert static["makespan_cycles"] > full["makespan_cycles"]
    assert static["energy_pj"]["mac"] < full["energy_pj"]["mac"]    # but fewer MACs are spent


def test_energy_breakdown_sums_to_total():
    a = arch(batch__policy="regroup")
    tr = _trace(80)
    r = replay(a, build_costs(a, TINY, 25, 8), tr)
    e = r["energy_pj"]
    assert sum(v for k, v in e.items() if k != "total") == pytest.approx(e["total"], rel=1e-12)
    assert all(e[k] > 0 for k in ("mac", "sram", "dram", "vector", "exit", "leakage"))
    per = r["energy_per_image_uj"]
    assert per["total"] == pytest.approx(e["total"] / 80 * 1e-6)


def test_poisson_low_rate_latency_equals_isolated_sample():
    a = arch(batch__policy="stream", arrivals__mode="poisson", arrivals__rate_per_s=0.5)
    tr = _trace(30)
    c = build_costs(a, TINY, 25, 1)
    r = replay(a, c, tr)
    iso = evaluate(c, tr, "stream", 1)
    # isolated: latency of sample i = its own service time
    own = np.diff(np.concatenate([[0], iso["_latency_us"]]))
    np.testing.assert_allclose(r["_latency_us"], own, rtol=1e-12)


def test_pipelining_overlaps_stages():
    tr = _trace(64)
    a1 = arch(batch__policy="stream", batch__max_in_flight=1)
    a4 = arch(batch__policy="stream", batch__max_in_flight=4)
    c = build_costs(a1, TINY, 25, 1)
    r1, r4 = replay(a1, c, tr), replay(a4, c, tr)
    assert r4["makespan_cycles"] < r1["makespan_cycles"]
    assert r4["busy_cycles"]["array"] == r1["busy_cycles"]["array"]


def test_poisson_static_batches_close_on_timeout():
    a = arch(batch__policy="static", batch__size=8, batch__timeout_us=50.0, arrivals__mode="poisson",
             arrivals__rate_per_s=2000.0)
    tr = _trace(40)
    r = replay(a, build_costs(a, TINY, 25, 8), tr)
    assert (r["finish_cycles"] > r["arrival_cycles"]).all()


@pytest.mark.parametrize("policy", ["static", "regroup", "stream"])
def test_serial_fast_path_equals_per_stage_path(policy, monkeypatch):
    import hwsim.replay
    a = arch(batch__policy=policy, batch__size=4, arrivals__mode="poisson", arrivals__rate_per_s=20000.0,
             batch__timeout_us=30.0)
    tr = _trace(150)
    c = build_costs(a, TINY, 25, a.effective_batch)
    assert hwsim.replay._serial(a, c)
    fast = replay(a, c, tr)
    monkeypatch.setattr(hwsim.replay, "_serial", lambda arch, costs: False)
    slow = replay(a, c, tr)
    np.testing.assert_array_equal(fast["finish_cycles"], slow["finish_cycles"])
    assert fast["energy_pj"] == slow["energy_pj"] and fast["busy_cycles"] == slow["busy_cycles"]
