"""Paged listings (gateway/listing.py): cursors are opaque, strict and bound to the listing
they were made for; keyset pages visit every item once, newest first, even while items are
added or deleted; the stores list in the same stable order."""

from __future__ import annotations

import base64
import json
import random
from datetime import UTC, datetime, timedelta, timezone

import pytest
from fastapi.exceptions import RequestValidationError

from contracts.jobs import JobKind, JobState, JobStatus
from gateway.listing import (
    CURSOR_MAX_CHARS,
    InvalidCursor,
    PageRequest,
    Position,
    Scope,
    decode_cursor,
    encode_cursor,
    filters,
    page_of,
)
from terra.jobs.store import JobStore
from tests.fakes import FakeKeyValue

T0 = datetime(2026, 12, 7, 9, 30, tzinfo=UTC)
ALICE = Scope("images", "alice")


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def raw(payload: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(payload, separators=(",", ":")).encode()
                                    ).decode().rstrip("=")


# -- cursors


def test_a_cursor_names_its_position_to_the_microsecond_and_is_url_safe():
    position = Position(datetime(2026, 12, 7, 10, 0, 0, 123457,
                                 tzinfo=timezone(timedelta(hours=2))), "img_7-a")
    cursor = encode_cursor(position, ALICE)
    assert set(cursor) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    assert len(cursor) <= CURSOR_MAX_CHARS
    decoded = decode_cursor(cursor, ALICE)
    assert decoded == position and decoded.created_at.tzinfo is UTC


def test_another_users_cursor_is_refused():
    cursor = encode_cursor(Position(T0, "a1"), Scope("images", "alice"))
    with pytest.raises(InvalidCursor, match="another listing"):
        decode_cursor(cursor, Scope("images", "bob"))


@pytest.mark.parametrize("other", [
    Scope("models", "alice"),  # another listing
    Scope("images", "alice", filters(job_id="j1")),  # other filters
])
def test_a_cursor_made_for_another_listing_or_filters_is_refused(other):
    with pytest.raises(InvalidCursor):
        decode_cursor(encode_cursor(Position(T0, "a1"), ALICE), other)


def test_filters_are_the_same_scope_in_any_order():
    assert filters(kind=["training", "prompt"], status=None) == filters(
        status=[], kind=["prompt", "training"])
    assert filters(kind=["prompt"]) != filters(kind=["training"])


def _fingerprint() -> str:
    return ALICE.fingerprint()


@pytest.mark.parametrize("cursor", [
    "",
    "not a cursor",
    "%%%%",
    "abc=",  # padding: not the canonical form
    "A" * (CURSOR_MAX_CHARS + 1),
    "bm90IGpzb24",  # base64 of "not json"
    raw([1, 2, 3]),
    raw({"v": 1, "t": 1, "i": "a1"}),  # no fingerprint
    raw({"v": 1, "t": 1, "i": "a1", "s": "x", "extra": 1}),
    raw({"v": 2, "t": 1, "i": "a1", "s": "x"}),
    raw({"v": 1, "t": 1.5, "i": "a1", "s": "x"}),
    raw({"v": 1, "t": True, "i": "a1", "s": "x"}),
    raw({"v": 1, "t": -1, "i": "a1", "s": "x"}),
    raw({"v": 1, "t": 10**20, "i": "a1", "s": "x"}),
    raw({"v": 1, "t": "1", "i": "a1", "s": "x"}),
    raw({"v": 1, "t": 1, "i": "a.b", "s": "x"}),  # would reach past a key part
    raw({"v": 1, "t": 1, "i": "*", "s": "x"}),
    raw({"v": 1, "t": 1, "i": 7, "s": "x"}),
])
def test_anything_but_a_cursor_this_api_made_is_refused(cursor):
    cursor = cursor.replace('"s":"x"', f'"s":"{_fingerprint()}"')
    with pytest.raises(InvalidCursor):
        decode_cursor(cursor, ALICE)


def test_only_the_canonical_form_of_a_cursor_is_taken():
    fingerprint = ALICE.fingerprint()
    reordered = raw({"i": "a1", "v": 1, "t": 5, "s": fingerprint})  # same content
    assert decode_cursor(raw({"v": 1, "t": 5, "i": "a1", "s": fingerprint}), ALICE) == Position(
        datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=5), "a1")
    with pytest.raises(InvalidCursor):
        decode_cursor(reordered, ALICE)
    spaced = base64.urlsafe_b64encode(json.dumps(
        {"v": 1, "t": 5, "i": "a1", "s": fingerprint}).encode()).decode().rstrip("=")
    with pytest.raises(InvalidCursor):
        decode_cursor(spaced, ALICE)


def test_an_invalid_cursor_is_a_validation_error_naming_the_cursor_parameter():
    with pytest.raises(RequestValidationError) as raised:
        PageRequest(20, "bm90IGpzb24").page([], lambda i: i, ALICE)
    [error] = raised.value.errors()
    assert error["loc"] == ("query", "cursor") and error["type"] == "value_error"


# -- pages


def positions(count: int, *, ties: bool = True, seed: int = 1) -> list[Position]:
    rng = random.Random(seed)
    # Few distinct times for many items: ties that only the id breaks.
    return [Position(at(rng.randrange(count // 3 + 1) if ties else i), f"id{i:04d}")
            for i in range(count)]


def walk(items, limit: int, scope: Scope = ALICE, change=None) -> list:
    """Every page's items in turn, following the cursors; `change(items, page_no)` may
    change the items between two pages."""
    seen, cursor, page_no = [], None, 0
    while True:
        shown, cursor = PageRequest(limit, cursor).page(items, lambda p: p, scope)
        seen.extend(shown)
        page_no += 1
        if cursor is None:
            return seen
        if change:
            items = change(items, page_no)


@pytest.mark.parametrize("limit", [1, 3, 7, 20, 100])
def test_pages_give_every_item_once_newest_first_with_ties_broken_by_id(limit):
    items = positions(50)
    seen = walk(items, limit)
    assert seen == sorted(items, reverse=True)
    assert len(set(seen)) == len(items)


def test_a_listing_that_fits_in_one_page_has_no_next_cursor():
    items = positions(20)
    for count in (0, 1, 20):
        shown, cursor = PageRequest(20, None).page(items[:count], lambda p: p, ALICE)
        assert len(shown) == count and cursor is None
    shown, cursor = PageRequest(19, None).page(items, lambda p: p, ALICE)
    assert len(shown) == 19 and cursor is not None


def test_items_added_while_paging_neither_repeat_nor_hide_those_there_at_the_start():
    items = positions(40, seed=3)
    start = list(items)
    added = iter(range(1000, 2000))

    def add_newer(current, page_no):
        # Each page, three newer items arrive: one in the very same microsecond as the
        # newest (an id tie), and two later.
        newest = max(current)
        return current + [Position(newest.created_at, f"zz{next(added)}"),
                          Position(newest.created_at + timedelta(seconds=1), f"n{next(added)}"),
                          Position(newest.created_at + timedelta(hours=1), f"n{next(added)}")]

    seen = walk(items, 6, change=add_newer)
    assert len(seen) == len(set(seen))  # nothing twice
    assert set(start) <= set(seen)  # nothing that was there is missed
    assert seen[:len(start)] == sorted(start, reverse=True)


def test_items_deleted_while_paging_hide_only_themselves():
    items = positions(30, seed=4)
    order = sorted(items, reverse=True)
    gone = {order[4], order[5], order[12]}  # order[4] is the first page's cursor position

    def delete(current, page_no):
        return [p for p in current if p not in gone] if page_no == 1 else current

    seen = walk(items, 5, change=delete)
    assert seen == order[:5] + [p for p in order[5:] if p not in gone]


def test_a_cursor_moves_only_within_the_callers_own_items():
    # The listing is always the caller's items; a position only says where to go on from.
    bobs = [Position(at(i), f"bob{i}") for i in range(5)]
    alices_cursor = encode_cursor(Position(at(3), "alice3"), Scope("images", "bob"))
    shown, _ = PageRequest(10, alices_cursor).page(bobs, lambda p: p, Scope("images", "bob"))
    assert shown == sorted([p for p in bobs if p < Position(at(3), "alice3")], reverse=True)


def test_page_of_sorts_whatever_order_it_is_given():
    items = positions(25, seed=9)
    shuffled = random.Random(2).sample(items, len(items))
    paged = page_of(shuffled, lambda p: p, 10)
    assert paged.items == sorted(items, reverse=True)[:10]
    assert paged.next_position == paged.items[-1]


# -- the stores' order


def job(user: str, job_id: str, kind: JobKind, seconds: float,
        status: JobStatus = JobStatus.QUEUED) -> JobState:
    return JobState(job_id=job_id, user_id=user, kind=kind, status=status,
                    created_at=at(seconds), updated_at=at(seconds))


async def test_a_users_jobs_of_several_kinds_are_read_from_each_bucket_newest_first():
    store = JobStore({kind: FakeKeyValue(f"jobs-{kind.value}") for kind in JobKind})
    made = [job("alice", "p1", JobKind.PROMPT, 1), job("alice", "t1", JobKind.TRAINING, 2),
            job("alice", "g1", JobKind.GENERATION, 3), job("alice", "g0", JobKind.GENERATION, 2),
            job("bob", "g9", JobKind.GENERATION, 4)]
    for state in made:
        assert await store.create(state)
    every = await store.of_user_kinds("alice")
    assert [j.job_id for j in every] == ["g1", "t1", "g0", "p1"]  # the tie at 2 s: by id
    some = await store.of_user_kinds("alice", [JobKind.PROMPT, JobKind.GENERATION])
    assert [j.job_id for j in some] == ["g1", "g0", "p1"]
    assert await store.of_user_kinds("carol") == []


async def test_jobs_of_a_kind_this_process_does_not_keep_are_refused():
    from terra.errors import TerraError

    store = JobStore({JobKind.GENERATION: FakeKeyValue()})
    with pytest.raises(TerraError):
        await store.of_user_kinds("alice", [JobKind.TRAINING])
