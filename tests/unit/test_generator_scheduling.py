from generator_service.scheduling import FairQueue


def drain(queue: FairQueue) -> list[str]:
    served = []
    while (queued := queue.pop()) is not None:
        served.append(queued.job_id)
    return served


def test_a_single_job_is_not_starved_by_a_burst():
    queue: FairQueue[None] = FairQueue()
    for i in range(10):
        queue.add(f"a{i}", "alice", None)
    queue.add("b0", "bob", None)
    served = drain(queue)
    assert served.index("b0") == 1  # right after alice's first
    assert [j for j in served if j.startswith("a")] == [f"a{i}" for i in range(10)]


def test_users_take_turns_and_order_predicts_pop():
    queue: FairQueue[None] = FairQueue()
    for job, user in [("a0", "a"), ("a1", "a"), ("b0", "b"), ("c0", "c"), ("b1", "b")]:
        queue.add(job, user, None)
    predicted = queue.order()
    assert predicted == ["a0", "b0", "c0", "a1", "b1"]
    assert drain(queue) == predicted


def test_removing_a_cancelled_job():
    queue: FairQueue[None] = FairQueue()
    queue.add("a0", "a", None)
    queue.add("b0", "b", None)
    assert queue.remove("a0").user_id == "a"
    assert queue.remove("zz") is None
    assert "a0" not in queue and len(queue) == 1
    assert drain(queue) == ["b0"]
