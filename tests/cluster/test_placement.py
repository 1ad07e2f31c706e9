"""The placer's decision, as a pure function: spread, stability, failover, fencing by
incarnation, slots and model pools."""

from __future__ import annotations

from agentd.cluster import AgentDemand, Assignment, NodeCapacity, Placement, place


def node(name: str, inc: str = "1", slots: int = 8, pools: tuple[str, ...] = ()) -> NodeCapacity:
    return NodeCapacity(name, inc, cores=2, memory_bytes=2**30, slots=slots, pools=pools)


def hosts(*nodes: NodeCapacity) -> dict[str, NodeCapacity]:
    return {n.node: n for n in nodes}


def where(placement: Placement, agent: str) -> dict[str, str]:
    return {r: a.node for r, a in placement[agent].items()}


def test_replicas_of_an_agent_spread_over_hosts() -> None:
    demands = {"echo": AgentDemand("echo", 2, 4), "slow": AgentDemand("slow", 2, 4)}
    result = place(demands, hosts(node("a"), node("b")), {})
    assert where(result.placement, "echo") == {"echo-0": "a", "echo-1": "b"}
    assert where(result.placement, "slow") == {"slow-0": "a", "slow-1": "b"}
    assert result.changed == {"echo", "slow"} and not result.unplaced


def test_a_placement_with_live_hosts_does_not_move() -> None:
    demands = {"echo": AgentDemand("echo", 2, 4)}
    nodes = hosts(node("a"), node("b"))
    first = place(demands, nodes, {})
    # a third host joins: nothing moves to it (no churn), nothing changes
    again = place(demands, {**nodes, "c": node("c")}, first.placement)
    assert again.placement == first.placement and not again.changed


def test_a_lost_hosts_replicas_move_keeping_their_names() -> None:
    demands = {"echo": AgentDemand("echo", 2, 4)}
    first = place(demands, hosts(node("a"), node("b")), {})
    after = place(demands, hosts(node("a")), first.placement)
    assert where(after.placement, "echo") == {"echo-0": "a", "echo-1": "a"}
    assert after.moved == {"echo": ["echo-1"]} and after.changed == {"echo"}


def test_a_restarted_host_is_a_new_incarnation_and_runs_nothing_of_the_old_one() -> None:
    demands = {"echo": AgentDemand("echo", 2, 4)}
    first = place(demands, hosts(node("a"), node("b", inc="old")), {})
    # b came back before its lease lapsed: same name, new incarnation
    after = place(demands, hosts(node("a"), node("b", inc="new")), first.placement)
    echo1 = after.placement["echo"]["echo-1"]
    assert echo1 != Assignment("b", "old")  # never the dead incarnation
    assert after.moved == {"echo": ["echo-1"]}


def test_scaling_down_drops_the_highest_indices_and_up_fills_the_lowest() -> None:
    nodes = hosts(node("a"), node("b"))
    three = place({"echo": AgentDemand("echo", 3, 4)}, nodes, {})
    one = place({"echo": AgentDemand("echo", 1, 4)}, nodes, three.placement)
    assert set(one.placement["echo"]) == {"echo-0"}
    two = place({"echo": AgentDemand("echo", 2, 4)}, nodes, one.placement)
    assert set(two.placement["echo"]) == {"echo-0", "echo-1"}
    assert two.placement["echo"]["echo-0"] == one.placement["echo"]["echo-0"]


def test_full_hosts_leave_replicas_unplaced() -> None:
    result = place({"echo": AgentDemand("echo", 3, 4)}, hosts(node("a", slots=2)), {})
    assert len(result.placement["echo"]) == 2 and result.unplaced == {"echo": 1}


def test_an_agent_that_needs_a_model_pool_goes_where_the_pool_is_served() -> None:
    nodes = hosts(node("a"), node("gpu", pools=("tiny",)))
    result = place({"writer": AgentDemand("writer", 2, 4, pool="tiny")}, nodes, {})
    assert set(where(result.placement, "writer").values()) == {"gpu"}
    # no host serves it: it runs anyway (its model calls fail with a clear error)
    alone = place({"writer": AgentDemand("writer", 1, 4, pool="big")}, hosts(node("a")), {})
    assert where(alone.placement, "writer") == {"writer-0": "a"}


def test_no_live_host_places_nothing() -> None:
    first = place({"echo": AgentDemand("echo", 1, 4)}, hosts(node("a")), {})
    none = place({"echo": AgentDemand("echo", 1, 4)}, {}, first.placement)
    assert none.placement == {"echo": {}} and none.unplaced == {"echo": 1}


def test_a_host_that_joins_late_gets_a_fair_share_under_fresh_names() -> None:
    demands = {"echo": AgentDemand("echo", 2, 4)}
    alone = place(demands, hosts(node("a")), {})
    assert where(alone.placement, "echo") == {"echo-0": "a", "echo-1": "a"}
    a_runs = NodeCapacity("a", "1", 2, 2**30, 8, replicas=("echo-0", "echo-1"))
    joined = place(demands, {"a": a_runs, "b": node("b")}, alone.placement)
    # echo-1 drains on a; echo-2 (a name nobody runs) starts on b: no name runs twice
    assert where(joined.placement, "echo") == {"echo-0": "a", "echo-2": "b"}


def test_a_name_still_running_on_a_live_host_is_not_given_to_another() -> None:
    demands = {"echo": AgentDemand("echo", 1, 1)}
    # echo-0 is unplaced (scaled down a moment ago) but a still drains it
    draining = NodeCapacity("a", "1", 2, 2**30, slots=0, replicas=("echo-0",))
    result = place(demands, {"a": draining, "b": node("b")}, {})
    assert result.placement == {"echo": {}} and result.unplaced == {"echo": 1}


def test_a_lost_replica_keeps_its_name_even_when_lower_names_are_free() -> None:
    demands = {"echo": AgentDemand("echo", 2, 4)}
    before = {"echo": {"echo-0": Assignment("a", "1"), "echo-2": Assignment("b", "1")}}
    after = place(demands, hosts(node("a")), before)
    assert set(after.placement["echo"]) == {"echo-0", "echo-2"}
    assert after.moved == {"echo": ["echo-2"]}
