"""The Redis key layout of the broker (the Lua dispatcher's header repeats it).

Every key of one queue shares the hash tag ``{<prefix>:<queue>}``, so a Redis Cluster keeps a queue on one slot and
every script call touches one slot only. With the default prefix ``bananas`` and a queue ``high``:

===================================  ======  =================================================================
key                                  type    contents
===================================  ======  =================================================================
``{bananas:high}:ready:<type>``      ZSET    id -> position: the ready jobs of one job type (``''`` for an
                                             envelope without one). enqueue, retry and move_due add at the next
                                             tail position (from ``seq``), release and crash recovery at the head
                                             (from ``head``), so all types ordered by position are one FIFO
``{bananas:high}:types``             ZSET    job type -> position of its ready ZSET's head, for every non-empty
                                             type: ``take`` picks the lowest head among the types asked for
``{bananas:high}:count``             STRING  entries of all ready ZSETs together (``depths``, the ``wake`` list)
``{bananas:high}:head``              STRING  counter going down from 0: positions of jobs put back at the head
``{bananas:high}:signal:<type>``     LIST    wake-up tokens for fetchers of that type (``BLPOP``); kept between
                                             ``min(n, 16)`` and ``n`` long, n = the type's ready jobs
``{bananas:high}:wake``              LIST    wake-up tokens for fetchers of every type, as long as ``count``
``{bananas:high}:ready``             LIST    the 0.1 ready list: jobs made ready by bananas-redis 0.1 processes;
                                             only popped, by fetches of every type (drained first)
``{bananas:high}:signal``            LIST    wake-up tokens of the 0.1 list, kept as 0.1 keeps them
``{bananas:high}:scheduled``         ZSET    id -> eta (Unix s); delayed jobs and retries waiting for ``move_due``
``{bananas:high}:leases``            ZSET    id -> lease expiry (Unix s) of every running job; ``reap`` reads it
``{bananas:high}:dead``              ZSET    id -> dead_at (Unix s); the queue's dead letters
``{bananas:high}:seq``               STRING  counter; fencing tokens and ordering sequence numbers come from it
``{bananas:high}:job:<id>``          HASH    the job record: state, body, type, deliveries, crashes, token,
                                             lease_until, eta, seq, reason, dead_at, updated_at, expires_at, started_at,
                                             cancel (a running job's cancel request, ``lua/control.lua``);
                                             completed, dead, cancelled and expired records carry an ``EXPIRE``
``{bananas:high}:progress:<id>``     HASH    value, message, at: the job's last reported progress
                                             (:mod:`bananas_redis.progress`); ``EXPIRE`` = ``dead_ttl``
``bananas:queues``                   HASH    queue name -> queue number, for every queue that ever received a job
                                             (``known_queues``); the number is the low 16 bits of each token
``bananas:queue-seq``                STRING  counter that hands out queue numbers
``bananas:due-signal``               LIST    wake-up tokens (at most 4) for idle schedulers: each delayed enqueue
                                             and retry pushes one after its script; a scheduling worker's idle
                                             ``BLPOP`` also waits on it, so ``move_due`` need not poll
``bananas:take-budget:<x>:<n>``     STRING  lives within one round trip: the jobs the takes of one fetch over
                                             several queues handed out so far (``SET`` first, ``DEL`` last, ``PX``
                                             60 s in case the connection drops); single server only
``{bananas:home:<b>}:<id>``         STRING  the queue that holds (or last held) job ``<id>``; ``EXPIRE`` = the
                                             longest retention + 7 days (+ the delay of a delayed job); ``<b>`` =
                                             ``crc32(id) % 16``, so a batch needs one ``home.lua`` call per bucket
``{bananas:workers}:index``          ZSET    worker id -> expiry of its record (worker registry, see
                                             :mod:`bananas_redis.registry`)
``{bananas:workers}:w:<id>``         STRING  one live worker's record, with a ``PX`` expiry of its ttl
===================================  ======  =================================================================

The periodic-job keys (the ``schedules`` capability, :mod:`bananas_redis.schedules`, script ``lua/periodic.lua``)
share the one hash tag ``{<prefix>:periodic}``, so its script touches one slot:

===================================  ======  =================================================================
``{bananas:periodic}:leader``        HASH    the scheduler's leader lease: holder, token, expires (Unix s)
``{bananas:periodic}:leader-seq``    STRING  counter of fencing tokens (each new lease takes the next)
``{bananas:periodic}:ticks``         HASH    schedule -> newest tick claimed (the per-tick guard)
``{bananas:periodic}:states``        HASH    schedule -> its state (JSON: next run, last run, last status ...)
===================================  ======  =================================================================

A fencing token is ``(per-queue counter << 16) | queue number``: the scripts only see the per-queue counter,
and tokens stay unique across queues.

``bananas:queues`` and ``bananas:queue-seq`` are the only keys outside any hash tag; they are only touched by plain
commands from Python (``HSETNX``/``HMGET``/``HKEYS``/``INCR``), never by a script. The home keys carry their own
bucket hash tag and are only touched by ``home.lua``, one bucket per call, never together with queue keys. They
enforce "one live copy per id" across queues: an enqueue claims the id's home (``SET NX``) in the same round trip as
the queue script (only for ids the producer chose: an id the kernel generated for the call is a fresh uuid4 and has
no home key; an explicit uuid4-shaped id whose claim is new is looked up in the other known queues); when the id
already lives in another queue, the ``vacate`` command there says whether that copy is live, and if so the new copy
is withdrawn (``withdraw``) before anyone takes it. That cross-queue check is not
atomic: two producers sending one id to two queues at the same instant may both store it. Within a queue, uniqueness
is atomic.
"""

from __future__ import annotations

import functools
import zlib

import attrs

__all__ = ["HOME_BUCKETS", "QueueKeys", "due_signal_key", "home_key", "queue_keys", "queue_seq_key", "registry_key"]
__all__ += ["periodic_keys"]


@attrs.frozen
class QueueKeys:
    """The keys of one queue, in the order the dispatcher script expects them as ``KEYS``."""

    queue: str
    tag: str
    ready: str
    scheduled: str
    leases: str
    dead: str
    seq: str
    signal: str
    job_prefix: str
    types: str
    count: str
    wake: str
    head: str

    @property
    def script_keys(self) -> tuple[str, ...]:
        return (self.ready, self.scheduled, self.leases, self.dead, self.seq, self.signal, self.types, self.count,
                self.wake, self.head)

    def type_ready(self, job_type: str) -> str:
        """The ZSET of the ready jobs of ``job_type`` (``self.ready`` is the 0.1 list)."""
        return self.ready + ":" + job_type

    def type_signal(self, job_type: str) -> str:
        """The wake-up LIST of fetchers of ``job_type``."""
        return self.signal + ":" + job_type

    def job(self, job_id: str) -> str:
        return self.job_prefix + job_id


@functools.lru_cache(maxsize=4096)
def queue_keys(prefix: str, queue: str) -> QueueKeys:
    """The keys of ``queue`` under ``prefix`` (cached: the hot path builds them once)."""
    tag = "{" + prefix + ":" + queue + "}"
    return QueueKeys(
        queue=queue,
        tag=tag,
        ready=tag + ":ready",
        scheduled=tag + ":scheduled",
        leases=tag + ":leases",
        dead=tag + ":dead",
        seq=tag + ":seq",
        signal=tag + ":signal",
        job_prefix=tag + ":job:",
        types=tag + ":types",
        count=tag + ":count",
        wake=tag + ":wake",
        head=tag + ":head",
    )


def registry_key(prefix: str) -> str:
    """The HASH queue name -> queue number of known queues (outside every hash tag; only plain commands touch it)."""
    return prefix + ":queues"


def queue_seq_key(prefix: str) -> str:
    """The counter that numbers queues in the registry."""
    return prefix + ":queue-seq"


def due_signal_key(prefix: str) -> str:
    """The LIST of wake-up tokens (at most 4) for idle schedulers: every delayed enqueue and retry pushes one."""
    return prefix + ":due-signal"


HOME_BUCKETS = 16


def home_key(prefix: str, job_id: str) -> tuple[int, str]:
    """``(bucket, key)`` of the STRING naming the queue that holds (or last held) ``job_id``."""
    bucket = zlib.crc32(job_id.encode()) % HOME_BUCKETS
    return bucket, "{" + prefix + ":home:" + str(bucket) + "}:" + job_id


def periodic_keys(prefix: str) -> tuple[str, str, str, str]:
    """The keys of ``lua/periodic.lua``, in its ``KEYS`` order: leader, leader-seq, ticks, states."""
    tag = "{" + prefix + ":periodic}"
    return (tag + ":leader", tag + ":leader-seq", tag + ":ticks", tag + ":states")
