"""SharedBuddyAllocator: one arena, many processes (API.md, "SharedBuddyAllocator").

Workers exchange blocks through queues and free each other's; workers are
SIGKILLed at random moments and while holding the lock; wrong segments are
refused; the three start methods and pickling carry the allocator into a
worker; a thread waiting for another process's lock leaves the GIL to the
others.  The long runs (100,000+ operations per worker, hundreds of kills)
are ``python tests/shared_soak.py``; these are their quick versions.
"""

from __future__ import annotations

import gc
import multiprocessing as mp
import os
import pickle
import random
import signal
import subprocess
import sys
import threading
import time
from multiprocessing import shared_memory

import pytest

import alloc
from alloc import OutOfMemory, SharedBuddyAllocator

SHM_DIR = "/dev/shm"


@pytest.fixture
def make():
    """SharedBuddyAllocator(create=True, ...) whose segments are unlinked and
    closed after the test, whatever it did."""
    made = []

    def _make(size=1 << 20, **kw):
        a = SharedBuddyAllocator(create=True, size=size, **kw)
        made.append(a)
        return a

    yield _make
    for a in made:
        a.close()
        try:
            a.unlink()
        except FileNotFoundError:
            pass


# ---- one process, two mappings ----------------------------------------------


def test_exported_as_alloc_class():
    assert alloc.SharedBuddyAllocator is SharedBuddyAllocator
    assert SharedBuddyAllocator.__module__ == "alloc"
    assert "SharedBuddyAllocator" in alloc.__all__


def test_attach_sees_the_same_arena_and_frees_across(make):
    a = make(1 << 20, min_size=16)
    b = SharedBuddyAllocator(a.name)
    try:
        assert (b.name, b.bytes_total, b.min_size) == (a.name, 1 << 20, 16)
        v = a.alloc(100)
        v[:] = bytes(range(100))
        off = a.offset_of(v)
        w = b.block_at(off)
        assert bytes(w) == bytes(range(100)) and b.offset_of(w) == off
        assert (len(b), b.bytes_allocated, b.bytes_wasted) == (1, 100, 28)
        b.free(w)  # a view in b's mapping frees a's block
        assert (len(a), a.bytes_allocated) == (0, 0)
        with pytest.raises(ValueError):
            a.free(v)  # already freed, from the other mapping
        a.check()
        b.check()
    finally:
        b.close()


def test_everything_buddyallocator_offers(make):
    import numpy as np

    a = make(1 << 16, min_size=16)
    b = SharedBuddyAllocator(a.name)
    try:
        v = b.calloc(40)
        assert bytes(v) == bytes(40)
        assert a.try_alloc(1 << 20) is None
        with pytest.raises(OutOfMemory):
            a.alloc(1 << 17)
        with pytest.raises(OutOfMemory):
            a.alloc_many(16, (1 << 16) // 16 + 1)  # more than the arena has
        many = a.alloc_many(64, 10)
        assert len(b) == 11 and b.bytes_allocated == 40 + 640
        b.free_many([b.block_at(a.offset_of(m)) for m in many[:5]])
        a.free_many(many[5:])
        z = a.alloc(0)
        assert len(z) == 0 and len(a) == 2
        a.free(z)
        r = a.alloc(30)
        r[:] = b"r" * 30
        r = a.realloc(r, 500)
        assert bytes(r[:30]) == b"r" * 30 and len(r) == 500
        b.free(np.frombuffer(b.block_at(a.offset_of(r)), dtype=np.uint8))
        with b.block(100) as buf:
            assert a.blocks is not None
            assert [(o, s, n) for o, s, n in a.blocks()][-1][2] == 100
            assert len(buf) == 100
        al = a.alloc(10, align=4096)
        assert a.offset_of(al) % 4096 == 0
        with pytest.raises(ValueError):
            a.alloc(10, align=8192)
        b.free_at(a.offset_of(al))
        st = b.stats()
        assert st["live_blocks"] == 1 and st["bytes_allocated"] == 40
        assert st["free_blocks"][16] >= 0 and st["orders"]
        assert b.counters()["alloc_calls"] == a.counters()["alloc_calls"] == 16
        assert "<svg" in (a.render() or "")
        a.reset_peaks()
        assert b.peak_live_blocks == 1
        b.free(v)
        with pytest.raises(ValueError):
            b.free_at(0)
        with pytest.raises(TypeError):
            b.free(5)  # type: ignore[arg-type]
        a.check()
        assert repr(a).startswith("<SharedBuddyAllocator name=")
    finally:
        b.close()


def test_more_handles_than_entry_slots(make):
    """Past the 16 one-argument entry slots, handles pass themselves."""
    a = make(1 << 16)
    handles = [SharedBuddyAllocator(a.name) for _ in range(20)]
    try:
        offsets = [h.offset_of(h.alloc(10 + i)) for i, h in enumerate(handles)]
        assert len(a) == 20
        for h, off in zip(reversed(handles), offsets):  # each frees another's
            h.free(h.block_at(off))
        assert len(a) == 0 and a.bytes_allocated == 0
        for h in (handles[0], handles[-1]):  # in a slot, and past them
            empty = h.alloc(0)  # a zero-size block: its view frees it
            assert h.offset_of(empty) >= 0 and len(a) == 1
            h.free(empty)
            assert len(a) == 0
    finally:
        for h in handles:
            h.close()
    a.check()


def test_odd_sizes_on_the_fast_path(make):
    a = make(1 << 16)
    with pytest.raises(ValueError):
        a.alloc(-1)
    with pytest.raises(OutOfMemory):
        a.alloc(2**64)
    with pytest.raises(OutOfMemory):
        a.alloc(1 << 17)
    assert a.try_alloc(2**64) is None and a.try_alloc(1 << 17) is None
    with pytest.raises(TypeError):
        a.alloc(1.5)  # type: ignore[arg-type]
    z = a.try_alloc(0)
    assert z is not None and len(z) == 0 and len(a) == 1
    a.free(z)
    assert a.counters()["failed_allocs"] == 4


def test_arguments_and_names(make):
    with pytest.raises(ValueError):
        SharedBuddyAllocator()  # attaching needs a name
    with pytest.raises(ValueError):
        SharedBuddyAllocator(create=True, size=0)
    with pytest.raises(TypeError):
        SharedBuddyAllocator(create=True, size="big")  # type: ignore[arg-type]
    a = make(1000, min_size=48)  # rounded as BuddyAllocator does
    assert (a.min_size, a.bytes_total) == (32, 1024)
    with pytest.raises(FileExistsError):
        SharedBuddyAllocator(a.name, create=True, size=4096)
    with pytest.raises(FileNotFoundError):
        SharedBuddyAllocator("alloc_test_no_such_segment")
    named = make(4096, name=f"alloc_test_named_{os.getpid()}")
    assert named.name == f"alloc_test_named_{os.getpid()}"
    n = a.bytes_total // a.min_size
    assert a.records_bytes == n * 2  # N (1 + w), w = 1 for min_size 32
    assert a.segment_bytes >= a.bytes_total + a.records_bytes


def test_a_subclass_that_skips_init_gets_clear_errors():
    class Lazy(SharedBuddyAllocator):
        def __init__(self):  # never calls super().__init__()
            pass

    lazy = Lazy()
    assert "not created" in repr(lazy) and len(lazy) == 0
    for op in (lambda: lazy.alloc(1), lambda: lazy.free(bytearray(1)),
               lambda: lazy.free_at(0)):
        with pytest.raises(ValueError):
            op()
    lazy.close()  # harmless


def test_close_keeps_views_and_freezes_statistics(make):
    a = make(1 << 16)
    b = SharedBuddyAllocator(a.name)
    v = b.alloc(10)
    v[:] = b"0123456789"
    b.close()
    b.close()  # idempotent
    assert b.closed and len(b) == 1 and b.bytes_allocated == 10
    with pytest.raises(ValueError):
        b.alloc(1)
    with pytest.raises(ValueError):
        b.free(v)
    b.check()  # nothing to check after close, as BuddyAllocator
    a.alloc(5)  # another process's change does not reach the frozen figures
    assert len(b) == 1 and len(a) == 2
    del b
    gc.collect()
    assert bytes(v) == b"0123456789"  # the view keeps the mapping
    v[0] = ord("x")
    assert bytes(a.block_at(0))[:1] == b"x"


def _mapped(name):
    with open("/proc/self/maps") as f:
        return sum(1 for line in f if line.rstrip().endswith("/" + name))


def test_the_mapping_goes_with_the_last_view(make):
    a = make(1 << 16)
    name = a.name
    b = SharedBuddyAllocator(name)
    assert _mapped(name) == 2
    v = b.alloc(100)
    b.close()
    del b
    gc.collect()
    assert _mapped(name) == 2  # v keeps b's mapping
    v[:3] = b"abc"
    assert bytes(a.block_at(a.offset_of(a.block_at(0))))[:3] == b"abc"
    del v
    gc.collect()
    assert _mapped(name) == 1  # b's is gone, a's remains


def test_pickling_attaches(make):
    a = make(1 << 16)
    v = a.alloc(8)
    v[:] = b"pickled!"
    b = pickle.loads(pickle.dumps(a))
    try:
        assert isinstance(b, SharedBuddyAllocator) and b is not a
        assert b.name == a.name and bytes(b.block_at(a.offset_of(v))) == b"pickled!"
    finally:
        b.close()


def test_unlink_while_attached(make):
    a = make(1 << 16)
    b = SharedBuddyAllocator(a.name)
    v = a.alloc(16)
    a.unlink()
    with pytest.raises(FileNotFoundError):
        SharedBuddyAllocator(a.name)  # the name is gone ...
    with pytest.raises(FileNotFoundError):
        b.unlink()
    w = b.alloc(16)  # ... the memory is not, for those attached
    w[:] = b"still here, yes!"
    a.free(a.block_at(b.offset_of(w)))
    a.free(v)
    assert len(b) == 0
    b.close()
    a.check()


# ---- the state machine of test_statemachine, on a shared arena ----------------


def _shared_machine(base):
    class Shared(base):
        """test_statemachine's traces (model-predicted offsets and statistics,
        wrong frees of every kind, check() after every step) on a
        SharedBuddyAllocator."""

        def make_int_arena(self, n, m):
            return SharedBuddyAllocator(create=True, size=n, min_size=m)

        def teardown(self):
            self.a.close()
            self.a.unlink()

    return Shared


@pytest.mark.parametrize("cfg", [("int", 4096, 16), ("int", 3000, 64), ("int", 100, 16)],
                         ids=["4096-16", "3000-64", "100-16"])
def test_random_traces_agree_with_model(cfg):
    from hypothesis import settings
    from hypothesis.stateful import run_state_machine_as_test
    from test_statemachine import AllocatorMachine, CountingMachine

    for base, examples in ((AllocatorMachine, 20), (CountingMachine, 8)):
        machine = _shared_machine(base)
        run_state_machine_as_test(lambda: machine(cfg),
                                  settings=settings(max_examples=examples,
                                                    stateful_step_count=50))


# ---- segments that are not ours ----------------------------------------------


@pytest.mark.parametrize("kind", ["random", "zeros", "tiny"])
def test_foreign_segments_are_refused(kind):
    size = {"random": 1 << 16, "zeros": 1 << 16, "tiny": 16}[kind]
    shm = shared_memory.SharedMemory(create=True, size=size)
    try:
        if kind == "random":
            shm.buf[:] = random.Random(1).randbytes(size)
        with pytest.raises(ValueError) as e:
            SharedBuddyAllocator(shm.name)
        want = "too few" if kind == "tiny" else "not a SharedBuddyAllocator"
        assert want in str(e.value)
    finally:
        shm.close()
        shm.unlink()


def test_truncated_and_resized_segments_are_refused(make):
    a = make(1 << 16)
    path = os.path.join(SHM_DIR, a.name)
    full = os.path.getsize(path)
    for size in (full - 4096, full + 4096):
        os.truncate(path, size)
        with pytest.raises(ValueError, match="truncated or resized"):
            SharedBuddyAllocator(a.name)
    os.truncate(path, full)
    SharedBuddyAllocator(a.name).close()


def test_incompatible_layout_is_refused(make):
    a = make(1 << 16)
    with open(os.path.join(SHM_DIR, a.name), "r+b") as f:
        f.seek(8)
        f.write((999).to_bytes(4, "little"))  # the layout version
    with pytest.raises(ValueError, match="incompatible build"):
        SharedBuddyAllocator(a.name)


# ---- workers ----------------------------------------------------------------


def _pattern(off: int, size: int) -> bytes:
    return bytes([(off >> 4) & 0xFF]) * size


def _exchange_worker(alloc_, wid, nworkers, rounds, inboxes, seed):
    """Allocate, write a pattern, send the offset to another worker; take
    offsets from the others, verify and free them (by view or offset)."""
    a = alloc_  # unpickled: attached in this process
    rng = random.Random(seed)
    batch = {w: [] for w in range(nworkers) if w != wid}
    done_from = 0
    freed = 0

    def receive(block: bool) -> None:
        nonlocal done_from, freed
        while not (block and done_from == nworkers - 1):
            try:
                msg = inboxes[wid].get(block, 60) if block else inboxes[wid].get_nowait()
            except Exception:
                return
            if msg is None:
                done_from += 1
            else:
                for i, (off, size) in enumerate(msg):
                    view = a.block_at(off)
                    if bytes(view) != _pattern(off, size):
                        raise AssertionError(f"block at {off} was overwritten")
                    if i & 1:
                        a.free(view)
                    else:
                        del view
                        a.free_at(off)
                    freed += 1

    for r in range(rounds):
        size = rng.randrange(1, 1500)
        v = a.try_alloc(size)
        while v is None:  # full: flush and free what others sent
            for w, items in batch.items():
                if items:
                    inboxes[w].put(items)
                    batch[w] = []
            receive(False)
            v = a.try_alloc(size)
        off = a.offset_of(v)
        v[:] = _pattern(off, size)
        to = rng.choice(list(batch))
        batch[to].append((off, size))
        if len(batch[to]) == 32:
            inboxes[to].put(batch[to])
            batch[to] = []
        if r % 64 == 0:
            receive(False)
    for w, items in batch.items():
        if items:
            inboxes[w].put(items)
        inboxes[w].put(None)
    receive(True)
    a.close()
    return freed


def _exchange_entry(alloc_, wid, nworkers, rounds, inboxes, results):
    results.put((wid, _exchange_worker(alloc_, wid, nworkers, rounds, inboxes, wid)))


def run_exchange(a, ctx, nworkers, rounds):
    """Run the exchange; return what the workers freed in total."""
    inboxes = [ctx.Queue() for _ in range(nworkers)]
    results = ctx.Queue()
    procs = [ctx.Process(target=_exchange_entry,
                         args=(a, w, nworkers, rounds, inboxes, results))
             for w in range(nworkers)]
    for p in procs:
        p.start()
    freed = sum(results.get(timeout=300)[1] for _ in procs)
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    return freed


def test_workers_exchange_and_free_each_others_blocks(make):
    a = make(8 << 20, min_size=16)
    nworkers, rounds = 4, 50_000  # each: 50,000 allocs, 50,000 verified frees
    before = a.counters()
    freed = run_exchange(a, mp.get_context("fork"), nworkers, rounds)
    assert freed == nworkers * rounds
    assert (len(a), a.bytes_allocated, a.bytes_free) == (0, 0, a.bytes_total)
    c = a.counters()
    assert c["alloc_calls"] - before["alloc_calls"] == nworkers * rounds
    assert c["free_calls"] - before["free_calls"] == nworkers * rounds
    a.check()


def _report_entry(alloc_, q):
    v = alloc_.alloc(32)
    v[:] = f"{mp.current_process().name:32.32}".encode()
    q.put((alloc_.offset_of(v), len(alloc_)))
    alloc_.close()


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_start_methods_carry_the_allocator(make, method):
    a = make(1 << 16)
    ctx = mp.get_context(method)
    q = ctx.Queue()
    p = ctx.Process(target=_report_entry, args=(a, q), name=f"worker-{method}")
    p.start()
    off, seen = q.get(timeout=120)
    p.join(60)
    assert p.exitcode == 0 and seen == 1
    assert bytes(a.block_at(off)).decode().strip() == f"worker-{method}"
    a.free_at(off)
    a.check()


# ---- processes killed -------------------------------------------------------


def _churn_entry(alloc_, ready):
    """Alloc and free at random, singly and in batches, and check() now and
    then (a batch and a check are long critical sections), until killed."""
    rng = random.Random(os.getpid())
    live = []
    ready.set()
    while True:
        x = rng.random()
        if x < 0.005:
            alloc_.check()
        elif x < 0.1 and len(live) < 200:
            try:
                live.extend(alloc_.alloc_many(rng.randrange(0, 300), 24))
            except OutOfMemory:
                pass
        elif x < 0.2 and len(live) >= 24:
            alloc_.free_many([live.pop() for _ in range(24)])
        elif len(live) < 200 and x < 0.6:
            v = alloc_.try_alloc(rng.randrange(0, 600))
            if v is not None:
                live.append(v)
        elif live:
            alloc_.free(live.pop(rng.randrange(len(live))))


def kill_rounds(a, rounds, rng, nworkers=3):
    """SIGKILL a churning worker ``rounds`` times at random moments (the
    others keep running); after each, check.  Returns the outcome counts."""
    ctx = mp.get_context("fork")
    workers = []
    outcome = {"clean_checks": 0, "corrupt": 0}

    def start():
        ready = ctx.Event()
        p = ctx.Process(target=_churn_entry, args=(a, ready), daemon=True)
        p.start()
        assert ready.wait(60)
        workers.append(p)

    for _ in range(nworkers):
        start()
    try:
        for _ in range(rounds):
            time.sleep(rng.uniform(0, 0.004))
            victim = workers.pop(rng.randrange(len(workers)))
            os.kill(victim.pid, signal.SIGKILL)
            victim.join(60)
            try:
                a.check()
                outcome["clean_checks"] += 1
            except RuntimeError as e:
                assert "unusable" in str(e)
                outcome["corrupt"] += 1
                break
            start()
    finally:
        for p in workers:
            os.kill(p.pid, signal.SIGKILL)
            p.join(60)
    return outcome


def test_workers_killed_at_random_moments(make):
    a = make(4 << 20, min_size=16)
    outcome = kill_rounds(a, 60, random.Random(7))
    try:  # settle a death the final kills left pending (it is decided by
        a.check()  # the next locker)
    except RuntimeError:
        assert outcome["corrupt"]
    counts = a.recovery_counts()
    print(f"\n60 kills: {outcome}, recovery: {counts}")
    decided = counts["sound"] + counts["repaired"] + counts["corrupt"] + counts["interrupted"]
    if outcome["corrupt"]:  # reported, never silently continued
        assert counts["corrupt"] == 1 and counts["owner_deaths"] >= decided
        for op in (lambda: a.alloc(8), a.check, a.stats, lambda: len(a),
                   lambda: a.free_at(0), lambda: a.bytes_allocated):
            with pytest.raises(RuntimeError, match="unusable"):
                op()
    else:
        assert counts["owner_deaths"] == decided  # every death was decided
        assert outcome["clean_checks"] == 60
        a.check()
        v = a.alloc(64)  # the survivors' arena still works
        a.free(v)


def _die_holding_entry(alloc_, spoil, ready):
    alloc_.alloc(100)
    if spoil == "core":
        alloc_._debug_flip(0, 0, 3)
    elif spoil == "records":
        alloc_._debug_set_tag(200, 0x41)
    alloc_._debug_hold_lock()
    ready.set()
    time.sleep(600)


def die_holding_lock(a, spoil):
    ctx = mp.get_context("fork")
    ready = ctx.Event()
    p = ctx.Process(target=_die_holding_entry, args=(a, spoil, ready), daemon=True)
    p.start()
    assert ready.wait(60)
    os.kill(p.pid, signal.SIGKILL)
    p.join(60)


@pytest.mark.parametrize("spoil", [None, "core"])
def test_death_holding_the_lock_is_recovered(make, spoil):
    a = make(1 << 16, min_size=16)
    keep = [a.alloc(n) for n in (1, 17, 300, 0)]
    die_holding_lock(a, spoil)
    assert a.stats()["live_blocks"] == 5  # this locked call recovers: nothing lost
    counts = a.recovery_counts()
    assert counts["owner_deaths"] == 1
    assert counts["repaired" if spoil else "sound"] == 1
    a.check()
    a.free_many(keep)
    assert a.bytes_allocated == 100
    a.check()


def test_death_with_broken_records_marks_corrupt(make):
    a = make(1 << 16, min_size=16)
    b = SharedBuddyAllocator(a.name)
    try:
        die_holding_lock(a, "records")
        for al in (a, b):  # every process, every call
            for op in (lambda: al.alloc(8), lambda: al.try_alloc(8), al.check,
                       al.stats, lambda: al.free_at(0), lambda: list(al.blocks()),
                       lambda: al.bytes_allocated, lambda: len(al), al.render):
                with pytest.raises(RuntimeError, match="died holding the lock"):
                    op()
        assert a.recovery_counts()["corrupt"] == 1
        assert repr(b).endswith("corrupt>")
        a.close()  # closing and unlinking still work
        assert a.closed
    finally:
        b.close()


# ---- threads ----------------------------------------------------------------


def _hold_entry(alloc_, held, release, timed_out):
    alloc_._debug_hold_lock()
    held.set()
    if not release.wait(30):
        timed_out.set()
    alloc_._debug_release_lock()


def test_waiting_for_another_process_leaves_the_gil(make):
    """A thread blocked on a lock that another process holds must not hold
    the GIL: the main thread has to run to let the holder go."""
    a = make(1 << 16)
    ctx = mp.get_context("fork")
    held, release, timed_out = ctx.Event(), ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold_entry, args=(a, held, release, timed_out))
    holder.start()
    assert held.wait(60)
    got = []
    waiter = threading.Thread(target=lambda: got.append(a.alloc(64)))
    waiter.start()
    while a.recovery_counts()["waits"] == 0 and holder.is_alive():
        time.sleep(0.001)  # runs only if the waiter left the GIL
    spins = sum(1 for _ in range(10_000))  # and more Python, still waiting
    release.set()
    waiter.join(60)
    holder.join(60)
    assert not timed_out.is_set() and spins == 10_000
    assert len(got) == 1 and len(got[0]) == 64
    a.free(got[0])


def test_threads_of_two_processes_share_it_exactly(make):
    a = make(1 << 20)
    ctx = mp.get_context("fork")

    def churn(n):
        for i in range(n):
            a.free(a.alloc(1 + i % 200))

    def entry():
        ts = [threading.Thread(target=churn, args=(3000,)) for _ in range(3)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()

    p = ctx.Process(target=entry)
    p.start()
    entry()
    p.join(120)
    assert p.exitcode == 0
    assert a.counters()["alloc_calls"] == a.counters()["free_calls"] == 18_000
    assert len(a) == 0
    a.check()


# ---- the resource tracker ---------------------------------------------------

TRACKER_SCRIPT = r"""
import multiprocessing as mp
from alloc import SharedBuddyAllocator

def worker(a):
    v = a.alloc(10)
    a.free(v)
    a.close()

def unlinker(c):
    c.unlink()  # a worker may remove the name; the creator's tracker copes

if __name__ == "__main__":
    mp.set_start_method({method!r})
    a = SharedBuddyAllocator(create=True, size=1 << 16)
    b = SharedBuddyAllocator(a.name)
    p = mp.Process(target=worker, args=(a,))
    p.start(); p.join()
    assert p.exitcode == 0
    b.close()
    a.alloc(1)
    a.close()
    a.unlink()
    c = SharedBuddyAllocator(create=True, size=4096)
    p = mp.Process(target=unlinker, args=(c,))
    p.start(); p.join()
    assert p.exitcode == 0
    try:
        c.unlink()
    except FileNotFoundError:
        print("gone", end=" ")
    print("done", a.name, c.name)
"""


@pytest.mark.parametrize("method", ["spawn", "fork"])
def test_no_resource_tracker_warnings_or_leaks(method, tmp_path):
    script = tmp_path / "tracker.py"  # spawn re-imports the main module
    script.write_text(TRACKER_SCRIPT.format(method=method))
    out = subprocess.run([sys.executable, str(script)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    words = out.stdout.split()
    assert words[:2] == ["gone", "done"] and len(words) == 4, out.stdout
    assert out.stderr == ""  # no leak warning, no tracker traceback
    # the script's own segments are gone (other runs may have theirs)
    left = set(os.listdir(SHM_DIR))
    assert not {n.lstrip("/") for n in words[2:]} & left


def test_a_creator_that_never_unlinks_is_cleaned_up(tmp_path):
    """As SharedMemory: the creator's resource tracker unlinks a forgotten
    segment at exit (and says so)."""
    script = ("from alloc import SharedBuddyAllocator\n"
              "a = SharedBuddyAllocator(create=True, size=4096)\n"
              "print(a.name)\n")
    # run outside the checkout: its unbuilt alloc/ must not shadow the install
    out = subprocess.run([sys.executable, "-c", script], capture_output=True,
                         text=True, timeout=120, cwd=tmp_path)
    name = out.stdout.strip()
    assert out.returncode == 0 and name.startswith("abuddy_")
    assert "leaked shared_memory" in out.stderr
    assert not os.path.exists(os.path.join(SHM_DIR, name))
