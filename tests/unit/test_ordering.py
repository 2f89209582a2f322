"""Update rounds: in every state between the old rules and the new ones, every host pair is
delivered exactly once and broadcasts never loop; sending all at once can fail that."""

from __future__ import annotations

import copy
import itertools
import random
from collections import Counter
from dataclasses import replace

import networkx as nx
import pytest
from os_ken.lib import hub
from os_ken.ofproto import ofproto_v1_3 as ofp
from os_ken.ofproto import ofproto_v1_3_parser as parser

from sdn.compile.desired import DesiredCache, desired_rules
from sdn.compile.routes import NetworkCompiler, Options
from sdn.explain.flowsim import Network, VnfModel
from sdn.model.cookies import CHAIN_TAG, COOKIE_FLOOD, chain_sub_kind, cookie_kind
from sdn.model.rules import SwitchRules
from sdn.reconcile import ordering
from sdn.reconcile.diff import Changes, diff
from sdn.southbound.connection import SwitchConnection, push
from testing.flowsim import fat_tree, snapshot_from_graph
from tests.unit.test_routing import random_connected_graph

OPTIONS = [Options(), Options(ecmp=False, protection=False), Options(ecmp=True, protection=False)]
EXHAUSTIVE_UP_TO = 5  # switches in a round: beyond, singletons, all-but-one and samples
SAMPLED_SUBSETS = 6


def compile_rules(snapshot, options: Options) -> dict[int, SwitchRules]:
    return NetworkCompiler(options).compile(snapshot)


def weighted(graph: nx.Graph, rng: random.Random) -> nx.Graph:
    g = graph.copy()
    for a, b in g.edges:
        g[a][b]["weight"] = float(rng.randint(1, 4))
    return g


def reweighted(graph: nx.Graph, rng: random.Random, changes: int = 3) -> nx.Graph:
    g = graph.copy()
    for a, b in rng.sample(sorted(g.edges), min(changes, g.number_of_edges())):
        g[a][b]["weight"] = float(rng.choice([1, 2, 3, 4, 8, 16]))
    return g


def subsets(dpids: list[int], rng: random.Random) -> list[tuple[int, ...]]:
    """Which of a round's switches have taken it, in the states checked."""
    if len(dpids) <= EXHAUSTIVE_UP_TO:
        return [c for n in range(len(dpids) + 1) for c in itertools.combinations(dpids, n)]
    picks = [(), tuple(dpids)]
    picks += [(d,) for d in dpids]
    picks += [tuple(x for x in dpids if x != d) for d in dpids]
    picks += [tuple(rng.sample(dpids, rng.randint(2, len(dpids) - 2)))
              for _ in range(SAMPLED_SUBSETS)]
    return picks


def states(held: dict[int, SwitchRules], rounds: ordering.Rounds, rng: random.Random):
    """Every state the checks look at: rounds before k taken, a subset of round k taken."""
    base = copy.deepcopy(held)
    for k, changes in enumerate(rounds):
        for subset in subsets(sorted(changes), rng):
            state = dict(base)
            for dpid in subset:
                state[dpid] = copy.deepcopy(base[dpid])
                ordering.apply_changes(state[dpid], changes[dpid])
            yield k, subset, state
        for dpid, c in changes.items():
            ordering.apply_changes(base[dpid], c)
    yield len(rounds), (), base


def problems(snapshot, rules, dead=frozenset()) -> dict[tuple, str]:
    """Host pairs not delivered exactly once, and broadcasts that loop or duplicate."""
    net = Network(snapshot, rules, dead)
    found = {}
    for src, dst in itertools.permutations(snapshot.hosts, 2):
        for flow in range(2):
            pkt = {"eth_src": src.mac, "eth_dst": dst.mac, "eth_type": 0x0800, "flow": flow}
            trace = net.send(src.dpid, src.port, pkt)
            if trace.looped or trace.delivered != [(dst.dpid, dst.port)]:
                found[(src.mac, dst.mac, flow)] = (
                    f"{src.mac}->{dst.mac}: path {trace.path[:12]} "
                    f"delivered {trace.delivered} looped {trace.looped}")
    for src in snapshot.hosts:
        trace = net.send(src.dpid, src.port, {"eth_src": src.mac, "eth_dst": "ff:ff:ff:ff:ff:ff"})
        if trace.looped or len(trace.delivered) != len(set(trace.delivered)):
            found[(src.mac, "broadcast")] = f"broadcast from {src.mac} looped or duplicated"
    return found


def first_problem(old_snapshot, new_snapshot, options, rounds_of, seed, dead=frozenset()):
    """The first intermediate state with a problem the old rules did not have already
    (with a dead link the old rules' fast failover need not save every pair), or None."""
    held = compile_rules(old_snapshot, options)
    desired = compile_rules(new_snapshot, options)
    rounds = rounds_of(held, desired, new_snapshot.links)
    rng = random.Random(seed)
    before = problems(old_snapshot, held, dead)
    for k, subset, state in states(held, rounds, rng):
        found = problems(old_snapshot, state, dead)
        if k == len(rounds):
            before = {}  # the new rules must be clean
        new = [message for pair, message in found.items() if pair not in before]
        if new:
            return f"round {k}/{len(rounds)} taken by {subset}: {new[0]}"
    return None


def unordered(held, desired, _links):
    return ordering.all_at_once(held, desired)


def reweight_case(seed: int):
    rng = random.Random(seed)
    g = weighted(random_connected_graph(seed, nodes=rng.randint(5, 9), extra_edges=4), rng)
    return snapshot_from_graph(g), snapshot_from_graph(reweighted(g, rng))


@pytest.mark.parametrize("options", OPTIONS, ids=["ecmp+ff", "single", "ecmp"])
@pytest.mark.parametrize("seed", range(15))
def test_ordered_reroute_is_clean_in_every_intermediate_state(seed, options):
    old, new = reweight_case(seed)
    assert problems(old, compile_rules(old, options)) == {}
    assert first_problem(old, new, options, ordering.plan_rounds, seed) is None


def test_unordered_reroute_fails_somewhere_and_ordered_does_not():
    """The check above can fail: with every switch's whole difference at once, some seeds
    reach a state that loops or drops; the same seeds are clean in rounds."""
    options = Options(ecmp=False, protection=False)
    failing = []
    for seed in range(15):
        old, new = reweight_case(seed)
        if first_problem(old, new, options, unordered, seed) is not None:
            failing.append(seed)
    assert failing, "no seed shows a problem with unordered updates"
    for seed in failing:
        old, new = reweight_case(seed)
        assert first_problem(old, new, options, ordering.plan_rounds, seed) is None


@pytest.mark.parametrize("seed", range(10))
def test_ordered_reroute_around_a_lost_link_is_clean(seed):
    """Fast failover carries the traffic over the dead link's detour; the reroute then
    moves it to the new shortest paths without a drop or loop on the way."""
    rng = random.Random(seed)
    g = weighted(random_connected_graph(seed, nodes=8, extra_edges=5), rng)
    old = snapshot_from_graph(g)
    bridges = set(nx.bridges(g))
    link = rng.choice([lk for lk in old.links
                       if (lk.a, lk.b) not in bridges and (lk.b, lk.a) not in bridges])
    cut = g.copy()
    cut.remove_edge(link.a, link.b)
    new = old.__class__(old.switches, tuple(lk for lk in old.links if lk != link),
                        old.hosts, {k: w for k, w in old.weights.items()
                                    if k != frozenset((link.a, link.b))})
    assert snapshot_from_graph(cut).graph().edges == new.graph().edges
    found = first_problem(old, new, Options(), ordering.plan_rounds, seed,
                          dead=frozenset({link}))
    assert found is None


def test_fat_tree_reroute_is_clean():
    rng = random.Random(7)
    g = weighted(fat_tree(4), rng)
    old = snapshot_from_graph(g)
    new = snapshot_from_graph(reweighted(g, rng, changes=6))
    for options in OPTIONS:
        assert first_problem(old, new, options, ordering.plan_rounds, 7) is None


def test_new_hosts_get_routes_before_they_are_mapped():
    """A host appearing on a new destination switch: every other host reaches it in every
    state where the switches next to it know it already (new pairs are only checked at
    the end: before their rules exist they go to the controller)."""
    g = weighted(random_connected_graph(3, nodes=7), random.Random(3))
    full = snapshot_from_graph(g)
    newcomer = full.hosts[-1]
    old = full.__class__(full.switches, full.links, full.hosts[:-1], full.weights)
    held, desired = compile_rules(old, Options()), compile_rules(full, Options())
    rounds = ordering.plan_rounds(held, desired, full.links)
    for _, _, state in states(held, rounds, random.Random(3)):
        assert problems(old, state) == {}
    final = copy.deepcopy(held)
    for changes in rounds:
        for dpid, c in changes.items():
            ordering.apply_changes(final[dpid], c)
    assert all(not diff(final[d], desired[d]) for d in desired)
    assert problems(full, final) == {}
    assert any(h == newcomer for h in full.hosts)


@pytest.mark.parametrize("seed", range(6))
def test_rounds_reach_exactly_the_desired_rules(seed):
    old, new = reweight_case(seed)
    held, desired = compile_rules(old, Options()), compile_rules(new, Options())
    state = copy.deepcopy(held)
    rounds = ordering.plan_rounds(held, desired, new.links)
    for changes in rounds:
        assert all(changes.values())
        for dpid, c in changes.items():
            ordering.apply_changes(state[dpid], c)
    assert all(not diff(state[d], desired[d]) for d in desired)
    sent = sorted(f for r in rounds for c in r.values() for f in c.flow_adds + c.flow_deletes)
    minimal = sorted(f for d in desired for c in [diff(held[d], desired[d])]
                     for f in c.flow_adds + c.flow_deletes)
    extra = list((Counter(sent) - Counter(minimal)).elements())
    assert not Counter(minimal) - Counter(sent)
    assert all(cookie_kind(f.cookie) == COOKIE_FLOOD for f in extra)  # only narrowed floods


def test_unchanged_rules_give_no_rounds():
    old, _ = reweight_case(1)
    rules = compile_rules(old, Options())
    assert ordering.plan_rounds(rules, copy.deepcopy(rules), old.links) == []
    assert ordering.all_at_once(rules, copy.deepcopy(rules)) == []


def test_groups_come_before_the_groups_naming_them():
    """ECMP with protection: a fast-failover group names a select group; whatever their
    ids, the select one is added first and deleted last."""
    old = snapshot_from_graph(weighted(fat_tree(4), random.Random(1)))
    rules = compile_rules(old, Options())
    rounds = ordering.plan_rounds({d: SwitchRules() for d in rules}, rules, old.links)
    added = [pair for per_switch in rounds for c in per_switch.values()
             for pair in nested_positions(c.group_adds)]
    assert added and all(named < naming for named, naming in added)
    back = ordering.plan_rounds(rules, {d: SwitchRules() for d in rules}, old.links)
    deleted = [pair for per_switch in back for c in per_switch.values()
               for pair in nested_positions(c.group_deletes)]
    assert all(named > naming for named, naming in deleted)


def nested_positions(groups) -> list[tuple[int, int]]:
    """(position of the named group, position of the group naming it) in `groups`, for
    every bucket that watches another group."""
    position = {g.group_id: i for i, g in enumerate(groups)}
    return [(position[b.watch_group], position[g.group_id])
            for g in groups for b in g.buckets if b.watch_group is not None]


def test_disabled_ordering_sends_one_round():
    old, new = reweight_case(2)
    held, desired = compile_rules(old, Options()), compile_rules(new, Options())
    rounds = ordering.plan_rounds(held, desired, new.links, ordered=False)
    assert len(rounds) == 1
    assert {d: c.flow_mods for d, c in rounds[0].items()} == {
        d: diff(held[d], desired[d]).flow_mods for d in desired if diff(held[d], desired[d])}
    assert isinstance(next(iter(rounds[0].values())), Changes)


def chain_failures(old, held, rounds, instances) -> tuple[int, int]:
    """(states checked, states where the chained flow or its reply goes wrong)."""
    from tests.unit.test_chains import LoadBalancerModel, arms, by_ip, round_trip

    h1 = by_ip(old, "10.0.0.1")
    checked = failed = 0
    for _, _, state in states(held, rounds, random.Random(0)):
        models = [VnfModel(i.dpid, i.ingress_port, i.egress_port,
                           LoadBalancerModel() if i.vnf == "lb" else None) for i in instances]
        checked += 1
        try:
            out, back = round_trip(Network(old, state, vnfs=models), old, h1)
        except AssertionError:
            failed += 1
            continue
        backend = by_ip(old, out.packets[0]["ipv4_dst"])
        failed += not (out.visits == arms(("fw", "in"), ("lb", "in"), ("mon", "in"))
                       and out.delivered == [(backend.dpid, backend.port)]
                       and back.visits == arms(("mon", "out"), ("lb", "out"), ("fw", "out"))
                       and back.delivered == [(h1.dpid, h1.port)])
    return checked, failed


def test_chain_tags_reroute_cleanly():
    """A heavier s1-s2 link moves the steering tags' paths (and the routes) around the
    ring: in every intermediate state the chained flow still visits fw, lb, mon in order,
    reaches a backend once, and its reply comes back through them in reverse. Sent all at
    once, some states break the chain."""
    from tests.unit.test_chains import build, make_policy, make_snapshot, standard_instances

    old = make_snapshot("ring")
    new = replace(old, weights={frozenset((1, 2)): 10.0})
    instances = standard_instances()
    _, held, _ = build(make_policy(), old, instances)
    _, desired, _ = build(make_policy(), new, instances)
    rounds = ordering.plan_rounds(held, desired, new.links)
    assert any(chain_sub_kind(f.cookie) == CHAIN_TAG
               for r in rounds for c in r.values() for f in c.flow_adds)
    checked, failed = chain_failures(old, held, rounds, instances)
    assert checked > len(rounds) and failed == 0
    _, failed = chain_failures(old, held, ordering.all_at_once(held, desired), instances)
    assert failed > 0


class RecordingDatapath:
    """A switch connection's far end: records what arrives, in one log shared by all
    switches, and answers barriers a moment later (unless silent)."""

    ofproto = ofp
    ofproto_parser = parser

    def __init__(self, dpid: int, log: list, silent: bool = False) -> None:
        self.id, self.log, self.silent = dpid, log, silent
        self.conn: SwitchConnection | None = None
        self.is_active = True
        self._xid = 0

    def send_msg(self, msg) -> None:
        self._xid += 1
        msg.xid = self._xid
        if isinstance(msg, parser.OFPBarrierRequest):
            self.log.append((self.id, "barrier"))
            if not self.silent:
                hub.spawn_after(0.002, self.conn.on_barrier_reply, msg.xid)
        else:
            self.log.append((self.id, type(msg).__name__))

    def send(self, buf: bytes) -> None:
        self.log.append((self.id, "flows"))


def connections(held, log, silent=()):
    conns = {}
    for dpid, rules in held.items():
        dp = RecordingDatapath(dpid, log, silent=dpid in silent)
        conns[dpid] = dp.conn = SwitchConnection(dp, held=copy.deepcopy(rules))
        conns[dpid].flows_read = conns[dpid].groups_read = conns[dpid].meters_read = True
    return conns


def test_push_sends_a_round_only_after_every_barrier_of_the_previous_one():
    old, new = reweight_case(4)
    held, desired = compile_rules(old, Options()), compile_rules(new, Options())
    expected = ordering.plan_rounds(held, desired, new.links)
    assert len(expected) >= 3
    log: list = []
    conns = connections(held, log)
    for conn in conns.values():
        reply = conn.on_barrier_reply

        def confirm(xid, reply=reply, dpid=conn.dpid):
            log.append((dpid, "reply"))
            reply(xid)
        conn.on_barrier_reply = confirm
    result = push(conns, desired, new.links)
    assert result.failures == {} and result.rounds == len(expected)
    assert result.flow_mods == sum(c.flow_mods for r in expected for c in r.values())
    assert all(not diff(conns[d].held, desired[d]) for d in desired)
    # Cut the log into rounds at the barriers: every switch of round k replied before
    # anything of round k + 1 was sent.
    barriers = [i for i, (_, what) in enumerate(log) if what == "barrier"]
    assert len(barriers) == sum(len(r) for r in expected)
    first = 0
    for per_switch in expected[:-1]:
        mine = barriers[first:first + len(per_switch)]
        first += len(per_switch)
        assert {log[i][0] for i in mine} == set(per_switch)
        next_send = next(i for i in range(mine[-1] + 1, len(log)) if log[i][1] != "reply")
        replied = {log[i][0] for i in range(mine[0], next_send) if log[i][1] == "reply"}
        assert replied == set(per_switch)


def test_push_stops_at_a_silent_switch_and_names_it():
    old, new = reweight_case(4)
    held, desired = compile_rules(old, Options()), compile_rules(new, Options())
    first = ordering.plan_rounds(held, desired, new.links)[0]
    silent = min(first)
    log: list = []
    conns = connections(held, log, silent={silent})
    result = push(conns, desired, new.links, timeout=0.05)
    assert set(result.failures) == {silent} and "barrier" in result.failures[silent]
    assert result.rounds == 1
    assert sum(1 for _, what in log if what == "barrier") == len(first)
    # without waiting, every round goes at once and nothing fails
    log.clear()
    conns = connections(held, log, silent={silent})
    result = push(conns, desired, new.links, wait=False)
    assert result.rounds == len(ordering.plan_rounds(held, desired, new.links))
    assert not result.failures and sum(1 for _, what in log if what == "barrier") == sum(
        len(r) for r in ordering.plan_rounds(held, desired, new.links))
    assert all(not diff(conns[d].held, desired[d]) for d in desired)


def test_push_reports_a_switch_error_and_sends_nothing_after_it():
    old, new = reweight_case(4)
    held, desired = compile_rules(old, Options()), compile_rules(new, Options())
    rounds = ordering.plan_rounds(held, desired, new.links)
    rejecting = min(rounds[1])  # something to reject before the last round
    conns = connections(held, [])
    conns[rejecting].datapath.send = lambda buf: conns[rejecting].on_error("type=5 code=0")
    result = push(conns, desired, new.links)
    failing_round = next(k for k, r in enumerate(rounds)
                         if rejecting in r and r[rejecting].flow_adds)
    assert result.failures == {rejecting: "type=5 code=0"}
    assert result.rounds == failing_round + 1 < len(rounds)



def test_a_stopping_controller_sends_no_further_round():
    old, new = reweight_case(4)
    held, desired = compile_rules(old, Options()), compile_rules(new, Options())
    rounds = ordering.plan_rounds(held, desired, new.links)
    assert len(rounds) >= 3
    log: list = []
    conns = connections(held, log)
    sent_rounds: list[int] = []
    result = push(conns, desired, new.links, wait=False,
                  stopping=lambda: sent_rounds.append(1) or len(sent_rounds) > 2)
    assert result.rounds == 2
    assert sum(1 for _, what in log if what == "barrier") == len(rounds[0]) + len(rounds[1])


def test_push_diffs_only_switches_not_in_step_and_a_change_at_the_switch_undoes_that():
    """What `DesiredCache` hands out again (the same object) to a switch that holds it is
    neither diffed nor sent; a flow the switch removed, or tables read back, put the switch
    out of step, and the next push restores what it lacks."""
    graph = random_connected_graph(4, nodes=12, extra_edges=6)
    old = snapshot_from_graph(graph, hosts_per_switch=1)
    new = replace(old, links=old.links[1:])
    cache = DesiredCache()
    before = desired_rules(None, old, cache=cache)
    log: list = []
    conns = connections({dpid: SwitchRules() for dpid in before}, log)
    assert push(conns, before, old.links).flow_mods > 0
    assert all(conns[d].in_step_with is before[d] for d in before)
    after = desired_rules(None, new, cache=cache)
    kept = {d for d in after if after[d] is before[d]}
    assert kept and kept != set(after)  # the lost link changed some switches, not all
    planned: list = []
    real_plan = ordering._plan

    def spy(held, desired, changing, links):
        planned.append(set(changing))
        return real_plan(held, desired, changing, links)

    ordering._plan = spy
    try:
        result = push(conns, after, new.links)
    finally:
        ordering._plan = real_plan
    assert planned == [set(after) - kept]
    assert result.switches <= set(after) - kept and result.flow_mods > 0
    assert all(not diff(conns[d].held, after[d]) for d in after)
    assert push(conns, after, new.links).flow_mods == 0  # all in step: nothing to send
    some = min(kept)
    key = next(iter(after[some].flows))
    conns[some].forget_flow(key)  # the switch dropped a rule it should hold
    result = push(conns, after, new.links)
    assert result.switches == {some} and result.flow_mods == 1
    conns[some].adopt(SwitchRules())  # tables read back empty
    assert push(conns, after, new.links).flow_mods == len(after[some].flows)


def _same_changes(a: Changes, b: Changes) -> bool:
    """Equal, but for the order of flows within one table and priority."""
    def canon(changes: Changes) -> dict:
        return {name: sorted(map(repr, getattr(changes, name)))
                for name in Changes.__dataclass_fields__}
    return canon(a) == canon(b)


@pytest.mark.parametrize("seed", range(4))
def test_desired_cache_gives_what_a_fresh_compile_does(seed: int) -> None:
    """Through a run of topology changes, the cached result, with the objects it hands out
    again, equals a compile from nothing; and diffing a switch's last rules against its
    new ones only at the keys its delta (`DesiredCache.deltas`) names gives a full diff."""
    rng = random.Random(seed)
    full = snapshot_from_graph(random_connected_graph(seed, nodes=10, extra_edges=6),
                               hosts_per_switch=1)
    cache = DesiredCache()
    last = desired_rules(None, full, cache=cache)
    reused = deltas = 0
    links, hosts = full.links, full.hosts
    for step in range(12):  # a link lost or back each step, hosts gone or back every third
        cut = rng.choice(full.links)
        links = tuple(lk for lk in links if lk != cut) if cut in links else (*links, cut)
        if step % 3 == 2:
            hosts = tuple(h for h in full.hosts if rng.random() < 0.8)
        snapshot = replace(full, links=links, hosts=hosts)
        now = desired_rules(None, snapshot, cache=cache)
        assert now == desired_rules(None, snapshot)
        reused += sum(rules is last[dpid] for dpid, rules in now.items())
        for dpid, delta in cache.deltas.items():
            assert delta.since is last[dpid] and delta.now is now[dpid]
            assert _same_changes(diff(last[dpid], now[dpid], delta.flow_keys),
                                 diff(last[dpid], now[dpid]))
            deltas += 1
        last = now
    assert reused > 0 and deltas > 0


def test_push_diffs_a_switch_in_step_with_its_delta_only_at_its_keys():
    """A push given the deltas sends what one without them sends; a switch that dropped
    a rule since is out of step with the delta's `since`, is diffed in full, and gets
    the rule back."""
    graph = random_connected_graph(5, nodes=14, extra_edges=8)
    old = snapshot_from_graph(graph, hosts_per_switch=1)
    new = replace(old, links=old.links[2:])
    cache = DesiredCache()
    before = desired_rules(None, old, cache=cache)
    with_deltas = connections({d: SwitchRules() for d in before}, [])
    without = connections({d: SwitchRules() for d in before}, [])
    push(with_deltas, before, old.links)
    push(without, before, old.links)
    after = desired_rules(None, new, cache=cache)
    assert cache.deltas
    dropped = min(cache.deltas)
    key = next(iter(before[dropped].flows.keys() & after[dropped].flows.keys()))
    with_deltas[dropped].forget_flow(key)
    without[dropped].forget_flow(key)
    keyed: list = []
    real_diff = ordering.diff

    def spy(current, desired, flow_keys=None):
        keyed.append(flow_keys is not None)
        return real_diff(current, desired, flow_keys)

    ordering.diff = spy
    try:
        sent = push(with_deltas, after, new.links, deltas=cache.deltas)
    finally:
        ordering.diff = real_diff
    assert sent.flow_mods == push(without, after, new.links).flow_mods
    assert keyed.count(True) == len(cache.deltas) - 1 and keyed.count(False) >= 1
    assert all(not diff(with_deltas[d].held, after[d]) for d in after)
