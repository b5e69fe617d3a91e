# cython: language_level=3, embedsignature=True, binding=False, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
# distutils: extra_compile_args = -ffp-contract=off
"""Compiled ACD: the algorithm of ``engine.acd.PyAcd`` (read its module
docstring for the theory of operation) on C arrays.

Agents and queues live in arrays indexed by their small int ids, callers in
a slot array with a free list (a C hash table maps caller id -> slot),
free agents once per eligibility class (``Cls``: the queues' tier prefix)
in a dense array scanned per decision, plus sorted int64 arrays for the
ordered family and, for classes above INDEX_HI free agents only, C binary
heaps per (strategy family, tier prefix) container (``Cont``; see "free
containers" below: same minimum as PyAcd's heaps), waiting callers
in per-(queue, priority level) sorted slot arrays, deadlines in one C heap.
Python objects appear only at the edges: arguments, the decision tuples,
configuration (skills, QueueConfig) and the query methods.

Every decision must equal PyAcd's: each branch below mirrors the reference
method of the same name, and ``-ffp-contract=off`` keeps float keys
bit-identical to Python's arithmetic.
"""
from libc.stdlib cimport malloc, realloc, free, calloc
from libc.string cimport memmove, memset
from libc.stdint cimport int64_t, uint64_t
from cpython.long cimport PyLong_AsLongLongAndOverflow

from engine.acd_types import (
    AgentState, AgentTrigger, AcdConfigError, AcdStateError, QueueConfig, QueueIndex, Reason, Strategy,
    TRANSITION_ARRAY, N_TRIGGERS, MAX_PRIORITY, PRIORITY_LEVELS as _PL, check_id, check_skills,
)

DEF NLEVELS = 10
DEF RANK_SHIFT = 21
DEF AGENT_MASK = 0x1FFFFF
# A class scans its dense array per decision while it holds at most INDEX_HI
# free agents; above that it also keeps a heap per heap-family container,
# dropped again below INDEX_LO (hysteresis: no flapping at the boundary).
DEF INDEX_HI = 512
DEF INDEX_LO = 128

# agent states / triggers (values of acd_types enums)
DEF ST_LOGGED_OUT = 0
DEF ST_NOT_READY = 1
DEF ST_READY = 2
DEF ST_RESERVED = 3
DEF ST_BUSY = 4
DEF ST_WRAPUP = 5
DEF TR_LOGIN = 0
DEF TR_LOGOUT = 1
DEF TR_READY = 2
DEF TR_NOT_READY = 3
DEF TR_OFFER = 4
DEF TR_ACCEPT = 5
DEF TR_DECLINE = 6
DEF TR_NO_ANSWER = 7
DEF TR_CANCEL = 8
DEF TR_BUSY = 9
DEF TR_CALL_ENDED = 10
DEF TR_WRAPUP_DONE = 11
DEF NTRIG = 12

DEF S_LONGEST_IDLE = 0
DEF S_FEWEST_CALLS = 1
DEF S_LEAST_TALK_TIME = 2
DEF S_ROUND_ROBIN = 3
DEF S_TOP_DOWN = 4
DEF S_RANDOM = 5
DEF S_RING_ALL = 6
DEF S_BEST_SKILL = 7
DEF S_WEIGHTED = 8

DEF C_WAITING = 0
DEF C_STICKY = 1
DEF C_OFFERED = 2

DEF D_OFFER = 0
DEF D_CANCELLED = 1
DEF D_NOT_READY = 2
DEF D_TIMEOUT = 3
DEF D_FULL = 4
DEF D_OVERFLOW = 5

cdef double INF = float("inf")
assert N_TRIGGERS == NTRIG and _PL == NLEVELS
cdef int TRANS[6 * NTRIG]
for _i, _v in enumerate(TRANSITION_ARRAY):
    TRANS[_i] = _v
cdef int RING_NO_ANSWER = int(Reason.RING_NO_ANSWER)


# ---------------------------------------------------------------- containers
cdef struct IVec:          # growable int64 array
    int64_t* d
    int n
    int cap

cdef struct HEntry:        # one heap for free agents and caller timers:
    double k1              # ordered by (k1, k2, a, b) like Python tuples
    double k2
    int64_t a              # free agents: agent id; timers: caller seq
    int64_t b              # free agents: epoch; timers: version
    int x                  # timers: caller slot (not part of the order)

cdef struct HVec:
    HEntry* d
    int n
    int cap

cdef struct Cont:          # a free-agent container, one cache line
    HVec h                 # heap families (only while its class is indexed)
    IVec o                 # ordered family (round_robin / random / ring_all / top_down)
    int cls                # the eligibility class whose free agents it orders
    int kind               # strategy giving the key (S_ROUND_ROBIN: ordered)
    double idle_weight     # weighted only
    double skill_weight
    int64_t pad

cdef struct DEntry:        # a free agent in a class's dense array
    double idle            # the key inputs, frozen while the agent is free
    double talk
    double calls
    double score
    int64_t key            # rank << RANK_SHIFT | agent
    int64_t epoch          # stale when the agent's epoch moved on

cdef struct DVec:
    DEntry* d
    int n
    int cap

cdef struct Cls:           # free agents of one tier prefix (eligibility class)
    DVec d                 # every free agent (plus stale entries), unordered
    int live               # free agents held
    int indexed            # heap containers maintained (live above idx_hi)
    int ord                # its ordered-family container or -1
    int n_hc               # its heap-family containers
    int* hc

cdef inline int ivec_reserve(IVec* v, int need) except -1:
    cdef int cap
    cdef int64_t* p
    if need <= v.cap:
        return 0
    cap = v.cap * 2 if v.cap else 8
    while cap < need:
        cap *= 2
    p = <int64_t*>realloc(v.d, cap * sizeof(int64_t))
    if p == NULL:
        raise MemoryError()
    v.d = p
    v.cap = cap
    return 0

cdef inline int ivec_insert(IVec* v, int i, int64_t x) except -1:
    ivec_reserve(v, v.n + 1)
    if i < v.n:
        memmove(&v.d[i + 1], &v.d[i], (v.n - i) * sizeof(int64_t))
    v.d[i] = x
    v.n += 1
    return 0

cdef inline void ivec_delete(IVec* v, int i) noexcept:
    if i < v.n - 1:
        memmove(&v.d[i], &v.d[i + 1], (v.n - i - 1) * sizeof(int64_t))
    v.n -= 1

cdef inline int ivec_bisect_left(IVec* v, int64_t x) noexcept:
    cdef int lo = 0, hi = v.n, mid
    while lo < hi:
        mid = (lo + hi) >> 1
        if v.d[mid] < x:
            lo = mid + 1
        else:
            hi = mid
    return lo

cdef inline int ivec_bisect_right(IVec* v, int64_t x) noexcept:
    cdef int lo = 0, hi = v.n, mid
    while lo < hi:
        mid = (lo + hi) >> 1
        if x < v.d[mid]:
            hi = mid
        else:
            lo = mid + 1
    return lo

cdef inline bint h_lt(HEntry* a, HEntry* b) noexcept:
    if a.k1 != b.k1:
        return a.k1 < b.k1
    if a.k2 != b.k2:
        return a.k2 < b.k2
    if a.a != b.a:
        return a.a < b.a
    return a.b < b.b

cdef int hvec_push(HVec* h, HEntry e) except -1:
    cdef int i, parent, cap
    cdef HEntry* p
    if h.n == h.cap:
        cap = h.cap * 2 if h.cap else 16
        p = <HEntry*>realloc(h.d, cap * sizeof(HEntry))
        if p == NULL:
            raise MemoryError()
        h.d = p
        h.cap = cap
    i = h.n
    h.n += 1
    while i > 0:
        parent = (i - 1) >> 1
        if h_lt(&e, &h.d[parent]):
            h.d[i] = h.d[parent]
            i = parent
        else:
            break
    h.d[i] = e
    return 0

cdef void h_siftdown(HVec* h, int i) noexcept:
    cdef int n = h.n, child
    cdef HEntry e = h.d[i]
    while True:
        child = 2 * i + 1
        if child >= n:
            break
        if child + 1 < n and h_lt(&h.d[child + 1], &h.d[child]):
            child += 1
        if h_lt(&h.d[child], &e):
            h.d[i] = h.d[child]
            i = child
        else:
            break
    h.d[i] = e

cdef HEntry hvec_pop(HVec* h) noexcept:
    cdef HEntry top = h.d[0]
    h.n -= 1
    if h.n > 0:
        h.d[0] = h.d[h.n]
        h_siftdown(h, 0)
    return top

cdef inline void _hkey(int s, double iw, double sw, DEntry* d, HEntry* e) noexcept:
    """The heap entry of free agent ``d`` for strategy ``s`` (PyAcd._heap_key)."""
    e.a = d.key & AGENT_MASK
    e.b = d.epoch
    e.k2 = 0.0
    if s == S_LONGEST_IDLE:
        e.k1 = d.idle
    elif s == S_FEWEST_CALLS:
        e.k1 = d.calls
        e.k2 = d.idle
    elif s == S_LEAST_TALK_TIME:
        e.k1 = d.talk
        e.k2 = d.idle
    elif s == S_BEST_SKILL:
        e.k1 = -d.score
        e.k2 = d.idle
    else:
        e.k1 = iw * d.idle - sw * d.score


# caller id -> slot: open addressing, linear probing, backward-shift deletion
# (no tombstones), so the hot enqueue/accept path never boxes the id or
# touches a Python dict.
cdef struct HtEntry:
    int64_t key
    int val                # slot, -1: empty

cdef inline uint64_t ht_hash(int64_t key) noexcept:
    cdef uint64_t z = <uint64_t>key * <uint64_t>0x9E3779B97F4A7C15
    return z ^ (z >> 29)


# ------------------------------------------------------------------ records
cdef struct AgentCont:
    double score
    int cont               # an eligibility class (Cls) id

cdef struct AgentRec:
    int state
    int rank
    int64_t key
    double idle_since
    int64_t calls
    double talk_s
    double busy_since
    int call_queue
    int offer_caller      # caller slot or -1
    int n_memb
    int* memb_queue
    int* memb_tier
    double* memb_score
    int n_ac              # distinct eligibility classes of the memberships
    AgentCont* ac        # (class, score) pairs: one array, fewer cache misses
    IVec sticky           # caller slots waiting for this agent only

cdef struct QueueRec:
    int defined
    int strategy
    int n_tiers
    double* thresholds
    double timeout_s
    int timeout_dest
    int max_length
    int full_dest
    double overflow_after_s
    int overflow_queue
    double ageing_interval_s
    int ageing_step
    int ageing_max
    int no_answer_not_ready
    double skill_weight
    double idle_weight
    double default_aht
    int window
    IVec fifo[NLEVELS]    # caller slots sorted by seq
    int count
    int* cont             # per tier: free-agent container id (shared)
    int64_t rr_last
    double* handle_times
    int n_handle
    int handle_pos

cdef struct CallerRec:
    int in_use
    int64_t id
    int queue
    int64_t seq
    int priority
    int eff
    int age_steps
    double enq_at
    int tier
    int state
    int sticky_agent
    double sticky_until
    IVec excl
    IVec offers
    int64_t ver


cdef class Acd:
    """Compiled twin of :class:`engine.acd.PyAcd` (same API, same decisions)."""

    cdef AgentRec* ag
    cdef int64_t* ep        # agent epochs, apart: the hot validity check stays in cache
    cdef int* qwait         # per queue: bit lv set iff fifo[lv] is non-empty; apart for
                            # the same reason (a freed agent skips empty levels unread)
    cdef int n_waiting      # waiting callers in all queues (0: skip the scan)
    cdef int n_ag
    cdef QueueRec* qs
    cdef int n_q
    cdef CallerRec* cs
    cdef int n_cs
    cdef IVec free_slots
    cdef HVec tm            # caller deadlines: (t, 0, seq, version), slot in x
    cdef int64_t seq_counter
    cdef int64_t ver_counter
    cdef int64_t epoch_counter
    cdef uint64_t rng
    cdef double now
    cdef list out
    cdef HtEntry* ht        # caller id -> slot (see HtEntry)
    cdef int ht_mask
    cdef int ht_n
    cdef dict cfgs          # queue id -> QueueConfig
    cdef dict skills        # agent id -> dict skill -> level
    cdef dict groups        # agent id -> frozenset
    cdef dict members       # queue id -> {agent: tier}
    cdef Cont* cn           # free containers
    cdef int n_cont
    cdef int cap_cont
    cdef dict cont_ids      # container signature -> id
    cdef Cls* cl            # eligibility classes
    cdef int n_cls
    cdef int cap_cls
    cdef int64_t* cmark     # per class: stamp used to dedupe memberships
    cdef int64_t stamp
    cdef dict cls_ids       # tier-prefix signature -> class id
    cdef int idx_hi         # a class with more free agents gets heap indexes
    cdef int idx_lo         # ... and drops them below this many
    cdef object index       # QueueIndex

    def __cinit__(self, uint64_t seed=0):
        self.rng = seed
        self.now = -INF
        self.out = []
        self._ht_init(64)
        self.cfgs = {}
        self.skills = {}
        self.groups = {}
        self.members = {}
        self.cont_ids = {}
        self.cls_ids = {}
        self.idx_hi = INDEX_HI
        self.idx_lo = INDEX_LO
        self.index = QueueIndex()

    def __init__(self, seed=0):
        pass

    def __dealloc__(self):
        cdef int i, t, lv
        for i in range(self.n_ag):
            free(self.ag[i].memb_queue)
            free(self.ag[i].memb_tier)
            free(self.ag[i].memb_score)
            free(self.ag[i].ac)
            free(self.ag[i].sticky.d)
        free(self.ag)
        free(self.ep)
        free(self.qwait)
        for i in range(self.n_q):
            if not self.qs[i].defined:
                continue
            free(self.qs[i].thresholds)
            for lv in range(NLEVELS):
                free(self.qs[i].fifo[lv].d)
            free(self.qs[i].cont)
            free(self.qs[i].handle_times)
        free(self.qs)
        for i in range(self.n_cont):
            free(self.cn[i].h.d)
            free(self.cn[i].o.d)
        free(self.cn)
        for i in range(self.n_cls):
            free(self.cl[i].d.d)
            free(self.cl[i].hc)
        free(self.cl)
        free(self.cmark)
        for i in range(self.n_cs):
            free(self.cs[i].excl.d)
            free(self.cs[i].offers.d)
        free(self.cs)
        free(self.free_slots.d)
        free(self.tm.d)
        free(self.ht)

    # ------------------------------------------------------------ growth
    cdef int _grow_agents(self, int need) except -1:
        cdef int cap
        cdef AgentRec* p
        cdef int64_t* e
        if need <= self.n_ag:
            return 0
        cap = max(need, self.n_ag * 2, 64)
        p = <AgentRec*>realloc(self.ag, cap * sizeof(AgentRec))
        if p == NULL:
            raise MemoryError()
        memset(&p[self.n_ag], 0, (cap - self.n_ag) * sizeof(AgentRec))
        self.ag = p
        e = <int64_t*>realloc(self.ep, cap * sizeof(int64_t))
        if e == NULL:
            raise MemoryError()
        memset(&e[self.n_ag], 0, (cap - self.n_ag) * sizeof(int64_t))
        self.ep = e
        self.n_ag = cap
        return 0

    cdef int _grow_queues(self, int need) except -1:
        cdef int cap
        cdef QueueRec* p
        cdef int* w
        if need <= self.n_q:
            return 0
        cap = max(need, self.n_q * 2, 16)
        p = <QueueRec*>realloc(self.qs, cap * sizeof(QueueRec))
        if p == NULL:
            raise MemoryError()
        memset(&p[self.n_q], 0, (cap - self.n_q) * sizeof(QueueRec))
        self.qs = p
        w = <int*>realloc(self.qwait, cap * sizeof(int))
        if w == NULL:
            raise MemoryError()
        memset(&w[self.n_q], 0, (cap - self.n_q) * sizeof(int))
        self.qwait = w
        self.n_q = cap
        return 0

    cdef int _new_slot(self) except -1:
        cdef int cap, i
        cdef CallerRec* p
        if self.free_slots.n == 0:
            cap = max(self.n_cs * 2, 64)
            p = <CallerRec*>realloc(self.cs, cap * sizeof(CallerRec))
            if p == NULL:
                raise MemoryError()
            memset(&p[self.n_cs], 0, (cap - self.n_cs) * sizeof(CallerRec))
            self.cs = p
            for i in range(cap - 1, self.n_cs - 1, -1):
                ivec_insert(&self.free_slots, self.free_slots.n, i)
            self.n_cs = cap
        self.free_slots.n -= 1
        return <int>self.free_slots.d[self.free_slots.n]

    # ------------------------------------------------------------ caller ids
    cdef int _ht_init(self, int cap) except -1:
        cdef HtEntry* p = <HtEntry*>malloc(cap * sizeof(HtEntry))
        cdef int i
        if p == NULL:
            raise MemoryError()
        for i in range(cap):
            p[i].val = -1
        self.ht = p
        self.ht_mask = cap - 1
        self.ht_n = 0
        return 0

    cdef int _ht_get(self, int64_t key) noexcept:
        cdef int i = <int>(ht_hash(key) & <uint64_t>self.ht_mask)
        while self.ht[i].val >= 0:
            if self.ht[i].key == key:
                return self.ht[i].val
            i = (i + 1) & self.ht_mask
        return -1

    cdef int _ht_put(self, int64_t key, int val) except -1:
        """Insert a key known to be absent."""
        cdef HtEntry* old
        cdef int i, n
        if 2 * (self.ht_n + 1) > self.ht_mask + 1:
            old = self.ht
            n = self.ht_mask + 1
            self._ht_init(2 * n)
            for i in range(n):
                if old[i].val >= 0:
                    self._ht_put(old[i].key, old[i].val)
            free(old)
        i = <int>(ht_hash(key) & <uint64_t>self.ht_mask)
        while self.ht[i].val >= 0:
            i = (i + 1) & self.ht_mask
        self.ht[i].key = key
        self.ht[i].val = val
        self.ht_n += 1
        return 0

    cdef void _ht_del(self, int64_t key) noexcept:
        cdef int m = self.ht_mask, i = <int>(ht_hash(key) & <uint64_t>self.ht_mask), j, h
        while self.ht[i].val >= 0 and self.ht[i].key != key:
            i = (i + 1) & m
        if self.ht[i].val < 0:
            return
        self.ht_n -= 1
        # backward shift: move later entries of the probe run into the hole
        # unless their home position lies cyclically in (i, j]
        j = i
        while True:
            j = (j + 1) & m
            if self.ht[j].val < 0:
                break
            h = <int>(ht_hash(self.ht[j].key) & <uint64_t>m)
            if (j > i and (h <= i or h > j)) or (j < i and (h <= i and h > j)):
                self.ht[i] = self.ht[j]
                i = j
        self.ht[i].val = -1

    cdef int _caller_key(self, object caller, int64_t* key) except -1:
        """The int64 key of ``caller`` as a dict would match it (1 if found
        a usable key, 0 if no queued caller can equal it)."""
        cdef int overflow = 0
        cdef long long k
        if type(caller) is not int:
            try:
                as_int = int(caller)
                if not (as_int == caller and hash(as_int) == hash(caller)):
                    return 0
            except (TypeError, ValueError, OverflowError):
                return 0
            caller = as_int
        k = PyLong_AsLongLongAndOverflow(caller, &overflow)
        if overflow:
            return 0
        key[0] = k
        return 1

    # ------------------------------------------------------------ configuration
    def add_queue(self, queue, config):
        check_id(queue, "queue")
        if not isinstance(config, QueueConfig):
            raise AcdConfigError(f"queue {queue} config must be a QueueConfig, got {type(config).__name__}")
        if queue in self.cfgs:
            raise AcdConfigError(f"queue {queue} already defined")
        if config.overflow_after_s > 0 and config.overflow_queue == queue:
            raise AcdConfigError(f"queue {queue} overflows to itself")
        cdef int qid = queue, t, n = len(config.tiers)
        self._grow_queues(qid + 1)
        cdef QueueRec* q = &self.qs[qid]
        memset(q, 0, sizeof(QueueRec))
        q.defined = 1
        q.strategy = int(config.strategy)
        q.n_tiers = n
        q.thresholds = <double*>malloc(n * sizeof(double))
        for t, th in enumerate(config.thresholds):
            q.thresholds[t] = th
        q.timeout_s = config.timeout_s
        q.timeout_dest = config.timeout_destination
        q.max_length = config.max_length
        q.full_dest = config.full_destination
        q.overflow_after_s = config.overflow_after_s
        q.overflow_queue = config.overflow_queue
        q.ageing_interval_s = config.ageing_interval_s
        q.ageing_step = config.ageing_step
        q.ageing_max = config.ageing_max_priority
        q.no_answer_not_ready = 1 if config.no_answer_not_ready else 0
        q.skill_weight = config.skill_weight
        q.idle_weight = config.idle_weight
        q.default_aht = config.default_handle_time_s
        q.window = config.handle_time_window
        q.cont = <int*>calloc(n, sizeof(int))
        if q.cont == NULL:
            raise MemoryError()
        s = q.strategy
        if s == S_ROUND_ROBIN or s == S_RANDOM or s == S_RING_ALL or s == S_TOP_DOWN:
            family = (S_ROUND_ROBIN,)   # sorted agent keys (top_down: the smallest)
        elif s == S_WEIGHTED:
            family = (s, q.idle_weight, q.skill_weight)
        else:
            family = (s,)
        for t in range(n):
            prefix = tuple((tr.skills, tr.groups) for tr in config.tiers[:t + 1])
            clid = self.cls_ids.get(prefix)
            if clid is None:
                clid = self._new_class()
                self.cls_ids[prefix] = clid
            sig = (family, prefix)
            cid = self.cont_ids.get(sig)
            if cid is None:
                cid = self._new_container()
                self.cont_ids[sig] = cid
                self.cn[<int>cid].kind = S_ROUND_ROBIN if len(family) == 1 and family[0] == S_ROUND_ROBIN else s
                self.cn[<int>cid].idle_weight = q.idle_weight
                self.cn[<int>cid].skill_weight = q.skill_weight
                self._class_add_cont(clid, cid)
            q.cont[t] = cid
        q.handle_times = <double*>calloc(q.window, sizeof(double))
        q.rr_last = -1
        self.cfgs[qid] = config
        self.index.add(qid, config)
        members = {}
        self.members[qid] = members
        cdef AgentRec* a
        cdef int aid
        for aid in sorted(self.skills):
            tier = config.min_tier(self.skills[aid], self.groups[aid])
            if tier < 0:
                continue
            members[aid] = tier
            a = &self.ag[aid]
            score = float(config.score(self.skills[aid]))
            clid = self.cn[q.cont[tier]].cls
            shared = self._has_cont(aid, clid)
            self._memb_add(aid, qid, tier, score)
            self._rebuild_ac(aid)
            if not shared and a.state == ST_READY:
                self._push_free(clid, aid, score)

    cdef int _new_container(self) except -1:
        cdef int cap
        cdef void* p
        if self.n_cont == self.cap_cont:
            cap = self.cap_cont * 2 if self.cap_cont else 64
            p = realloc(self.cn, cap * sizeof(Cont))
            if p == NULL:
                raise MemoryError()
            self.cn = <Cont*>p
            p = realloc(self.cmark, cap * sizeof(int64_t))
            if p == NULL:
                raise MemoryError()
            self.cmark = <int64_t*>p
            self.cap_cont = cap
        memset(&self.cn[self.n_cont], 0, sizeof(Cont))
        self.n_cont += 1
        return self.n_cont - 1

    cdef int _new_class(self) except -1:
        cdef int cap
        cdef void* p
        if self.n_cls == self.cap_cls:
            cap = self.cap_cls * 2 if self.cap_cls else 64
            p = realloc(self.cl, cap * sizeof(Cls))
            if p == NULL:
                raise MemoryError()
            self.cl = <Cls*>p
            p = realloc(self.cmark, cap * sizeof(int64_t))
            if p == NULL:
                raise MemoryError()
            self.cmark = <int64_t*>p
            self.cap_cls = cap
        memset(&self.cl[self.n_cls], 0, sizeof(Cls))
        self.cl[self.n_cls].ord = -1
        self.cmark[self.n_cls] = 0
        self.n_cls += 1
        return self.n_cls - 1

    cdef int _class_add_cont(self, int clid, int cid) except -1:
        """Attach new container ``cid`` to class ``clid``, filled with the
        class's current free agents (add_queue on a live ACD)."""
        cdef Cls* k = &self.cl[clid]
        cdef Cont* q = &self.cn[cid]
        cdef int* p
        cdef int i
        q.cls = clid
        self._dense_compact(clid)
        if q.kind == S_ROUND_ROBIN:
            k.ord = cid
            for i in range(k.d.n):
                ivec_insert(&q.o, ivec_bisect_right(&q.o, k.d.d[i].key), k.d.d[i].key)
            return 0
        p = <int*>realloc(k.hc, (k.n_hc + 1) * sizeof(int))
        if p == NULL:
            raise MemoryError()
        k.hc = p
        k.hc[k.n_hc] = cid
        k.n_hc += 1
        if k.indexed:
            self._fill_heap(clid, cid)
        return 0

    def _set_index_limits(self, int hi, int lo):
        """Test hook: a class gets heap indexes above ``hi`` free agents and
        drops them below ``lo`` (decisions never depend on these)."""
        if not 0 <= lo <= hi:
            raise ValueError(f"need 0 <= lo <= hi, got lo={lo} hi={hi}")
        self.idx_hi = hi
        self.idx_lo = lo

    cdef bint _has_cont(self, int aid, int cid) noexcept:
        cdef AgentRec* a = &self.ag[aid]
        cdef int i
        for i in range(a.n_ac):
            if a.ac[i].cont == cid:
                return True
        return False

    cdef int _rebuild_ac(self, int aid) except -1:
        """Recompute the agent's distinct eligibility classes from its
        memberships (queues sharing a class share its free agents)."""
        cdef AgentRec* a = &self.ag[aid]
        cdef int i, k, cid, n = a.n_memb
        cdef AgentCont* p = <AgentCont*>realloc(a.ac, (n + 1) * sizeof(AgentCont))
        if p == NULL:
            raise MemoryError()
        a.ac = p
        self.stamp += 1
        k = 0
        for i in range(n):
            cid = self.cn[self.qs[a.memb_queue[i]].cont[a.memb_tier[i]]].cls
            if self.cmark[cid] == self.stamp:
                continue
            self.cmark[cid] = self.stamp
            a.ac[k].cont = cid
            a.ac[k].score = a.memb_score[i]
            k += 1
        a.n_ac = k
        return 0

    cdef int _memb_add(self, int aid, int qid, int tier, double score) except -1:
        """Insert a membership keeping memb_queue sorted by queue id."""
        cdef AgentRec* a = &self.ag[aid]
        cdef int i, n = a.n_memb
        a.memb_queue = <int*>realloc(a.memb_queue, (n + 1) * sizeof(int))
        a.memb_tier = <int*>realloc(a.memb_tier, (n + 1) * sizeof(int))
        a.memb_score = <double*>realloc(a.memb_score, (n + 1) * sizeof(double))
        if a.memb_queue == NULL or a.memb_tier == NULL or a.memb_score == NULL:
            raise MemoryError()
        i = n
        while i > 0 and a.memb_queue[i - 1] > qid:
            a.memb_queue[i] = a.memb_queue[i - 1]
            a.memb_tier[i] = a.memb_tier[i - 1]
            a.memb_score[i] = a.memb_score[i - 1]
            i -= 1
        a.memb_queue[i] = qid
        a.memb_tier[i] = tier
        a.memb_score[i] = score
        a.n_memb = n + 1
        return 0

    cdef int _attach(self, int aid) except -1:
        sk = self.skills[aid]
        gr = self.groups[aid]
        for qid in self.index.candidates(sk):
            cfg = self.cfgs[qid]
            tier = cfg.min_tier(sk, gr)
            if tier >= 0:
                self.members[qid][aid] = tier
                self._memb_add(aid, qid, tier, float(cfg.score(sk)))
        self._rebuild_ac(aid)
        return 0

    cdef void _detach(self, int aid):
        cdef AgentRec* a = &self.ag[aid]
        cdef int i
        for i in range(a.n_memb):
            del self.members[a.memb_queue[i]][aid]
        a.n_memb = 0
        a.n_ac = 0

    # --------------------------------------------------------------- agent side
    def login(self, agent, double now, skills=(), groups=(), rank=-1):
        check_id(agent, "agent")
        sk = dict(check_skills(skills))
        gr = frozenset(check_id(g, "group") for g in groups)
        if rank == -1:
            rank = agent
        if not 0 <= rank < (1 << 31):
            raise AcdConfigError(f"agent {agent} rank must be in 0..2**31-1, got {rank}")
        self._advance(now)
        if agent in self.skills:
            raise AcdStateError(f"agent {agent} is already logged in")
        cdef int aid = agent
        self._grow_agents(aid + 1)
        cdef AgentRec* a = &self.ag[aid]
        a.state = ST_NOT_READY
        a.rank = rank
        a.key = ((<int64_t>rank) << RANK_SHIFT) | aid
        a.idle_since = 0.0
        a.calls = 0
        a.talk_s = 0.0
        a.busy_since = 0.0
        self.epoch_counter += 1
        self.ep[aid] = self.epoch_counter
        a.call_queue = -1
        a.offer_caller = -1
        a.n_memb = 0
        a.n_ac = 0
        a.sticky.n = 0
        self.skills[aid] = sk
        self.groups[aid] = gr
        self._attach(aid)

    cdef int _agent(self, object agent) except -1:
        cdef int overflow = 0
        cdef long long aid
        if type(agent) is int:  # fast path: no dict lookup
            aid = PyLong_AsLongLongAndOverflow(agent, &overflow)
            if overflow == 0 and 0 <= aid < self.n_ag and self.ag[aid].state != ST_LOGGED_OUT:
                return <int>aid
        elif isinstance(agent, int) and agent in self.skills:
            return agent
        raise AcdStateError(f"agent {agent!r} is not logged in")

    cdef int _transition(self, int aid, int trigger) except -1:
        cdef AgentRec* a = &self.ag[aid]
        cdef int old = a.state
        cdef int new = TRANS[old * NTRIG + trigger]
        if new < 0:
            raise AcdStateError(
                f"agent {aid} in state {AgentState(old).label} cannot {AgentTrigger(trigger).name.lower()}"
            )
        a.state = new
        return old

    def logout(self, agent, double now):
        cdef int aid = self._agent(agent)
        self._advance(now)
        cdef int old = self._transition(aid, TR_LOGOUT)
        self._leave(aid, old, now)
        self._detach(aid)
        del self.skills[aid]
        del self.groups[aid]
        cdef AgentRec* a = &self.ag[aid]
        cdef list released = sorted([(self.cs[<int>a.sticky.d[i]].seq, <int>a.sticky.d[i]) for i in range(a.sticky.n)])
        a.sticky.n = 0
        cdef int slot
        cdef CallerRec* c
        for _, slot in released:
            c = &self.cs[slot]
            c.state = C_WAITING
            c.sticky_agent = -1
            c.sticky_until = INF
            self._schedule(slot)
            self._wait(slot, now)

    def ready(self, agent, double now):
        cdef int aid = self._agent(agent)
        self._advance(now)
        cdef int old = self._transition(aid, TR_READY)
        if old != ST_READY:
            self._end_wrapup(aid, old, now)
            self.ag[aid].idle_since = now
            self._available(aid, now)

    def not_ready(self, agent, double now):
        cdef int aid = self._agent(agent)
        self._advance(now)
        cdef int old = self._transition(aid, TR_NOT_READY)
        self._end_wrapup(aid, old, now)
        self._leave(aid, old, now)

    def busy(self, agent, double now):
        cdef int aid = self._agent(agent)
        self._advance(now)
        cdef int old = self._transition(aid, TR_BUSY)
        self._end_wrapup(aid, old, now)
        self._leave(aid, old, now)
        self.ag[aid].busy_since = now
        self.ag[aid].call_queue = -1

    def call_ended(self, agent, double now):
        cdef int aid = self._agent(agent)
        self._advance(now)
        self._transition(aid, TR_CALL_ENDED)
        cdef AgentRec* a = &self.ag[aid]
        if a.call_queue >= 0:
            a.talk_s += now - a.busy_since

    def wrapup_done(self, agent, double now):
        cdef int aid = self._agent(agent)
        self._advance(now)
        cdef int old = self._transition(aid, TR_WRAPUP_DONE)
        self._end_wrapup(aid, old, now)
        self.ag[aid].idle_since = now
        self._available(aid, now)

    def set_skills(self, agent, double now, skills, groups=None):
        cdef int aid = self._agent(agent)
        sk = dict(check_skills(skills))
        gr = self.groups[aid] if groups is None else frozenset(check_id(g, "group") for g in groups)
        self._advance(now)
        cdef bint was_free = self.ag[aid].state == ST_READY
        if was_free:
            self._unfree(aid)
        self._detach(aid)
        self.skills[aid] = sk
        self.groups[aid] = gr
        self._attach(aid)
        if was_free:
            self._available(aid, now)

    # -------------------------------------------------------------- caller side
    def enqueue(self, caller, queue, double now, priority=0, sticky_agent=-1, double sticky_s=0.0):
        cdef int qid = self._queue(queue)
        cdef int overflow = 1
        if isinstance(caller, int) and not isinstance(caller, bool):
            PyLong_AsLongLongAndOverflow(caller, &overflow)
        if overflow:
            raise AcdStateError(f"caller id must be a 64-bit int, got {caller!r}")
        cdef int p_ovf = 1
        cdef long long pr = -1
        if type(priority) is int:  # fast path: no Python comparisons
            pr = PyLong_AsLongLongAndOverflow(priority, &p_ovf)
        if p_ovf or not 0 <= pr <= NLEVELS - 1:
            if not 0 <= priority <= MAX_PRIORITY:
                raise AcdConfigError(f"caller {caller} priority must be in 0..{MAX_PRIORITY}, got {priority}")
        if not sticky_s >= 0:
            raise AcdConfigError(f"caller {caller} sticky_s must be >= 0, got {sticky_s}")
        self._advance(now)
        cdef int64_t ckey = <int64_t>PyLong_AsLongLongAndOverflow(caller, &overflow)
        if self._ht_get(ckey) >= 0:
            raise AcdStateError(f"caller {caller} is already queued")
        cdef int sa = -1
        if sticky_s > 0 and sticky_agent in self.skills:
            sa = sticky_agent
        cdef int slot = self._new_slot()
        cdef CallerRec* c = &self.cs[slot]
        c.id = ckey
        c.priority = priority
        c.excl.n = 0
        c.offers.n = 0
        c.sticky_agent = -1
        c.sticky_until = INF
        c.ver = -1
        self._enter(slot, qid, now, sa, sticky_s)

    cdef int _queue(self, object queue) except -1:
        cdef int overflow = 0
        cdef long long qid
        if type(queue) is int:
            qid = PyLong_AsLongLongAndOverflow(queue, &overflow)
            if overflow == 0 and 0 <= qid < self.n_q and self.qs[qid].defined:
                return <int>qid
        elif isinstance(queue, int) and queue in self.cfgs:
            return queue
        raise AcdStateError(f"queue {queue!r} is not defined")

    cdef int _caller(self, caller) except -1:
        cdef int64_t key
        cdef int slot = -1
        if self._caller_key(caller, &key):
            slot = self._ht_get(key)
        if slot < 0:
            raise AcdStateError(f"caller {caller!r} is not queued")
        return slot

    def abandon(self, caller, double now):
        cdef int slot = self._caller(caller)
        self._advance(now)
        cdef IVec rel
        rel.d = NULL
        rel.n = rel.cap = 0
        try:
            self._detach_caller(slot, &rel)
            for i in range(rel.n):
                self._available(<int>rel.d[i], now)
        finally:
            free(rel.d)

    def transfer(self, caller, queue, double now, priority=-1):
        cdef int slot = self._caller(caller)
        cdef int qid = self._queue(queue)
        if not -1 <= priority <= MAX_PRIORITY:
            raise AcdConfigError(f"caller {caller} priority must be in 0..{MAX_PRIORITY}, got {priority}")
        self._advance(now)
        cdef IVec rel
        rel.d = NULL
        rel.n = rel.cap = 0
        try:
            self._detach_caller(slot, &rel)
            self._take_slot(slot)
            self._reenter(slot, qid, now, self.cs[slot].priority if priority < 0 else priority)
            for i in range(rel.n):
                self._available(<int>rel.d[i], now)
        finally:
            free(rel.d)

    cdef int _offer_pair(self, caller, agent, int* slot_out) except -1:
        cdef int slot = self._caller(caller)
        cdef int aid = self._agent(agent)
        if self.ag[aid].offer_caller != slot:
            raise AcdStateError(f"agent {agent} has no offer for caller {caller}")
        slot_out[0] = slot
        return aid

    def accept(self, caller, agent, double now):
        cdef int slot
        cdef int aid = self._offer_pair(caller, agent, &slot)
        self._advance(now)
        self._transition(aid, TR_ACCEPT)
        cdef AgentRec* a = &self.ag[aid]
        cdef CallerRec* c = &self.cs[slot]
        a.offer_caller = -1
        a.calls += 1
        a.busy_since = now
        a.call_queue = c.queue
        cdef int qid = c.queue, i, b
        cdef int64_t cid = c.id
        cdef IVec others
        others.d = NULL
        others.n = others.cap = 0
        try:
            for i in range(c.offers.n):
                if c.offers.d[i] != aid:
                    ivec_insert(&others, others.n, c.offers.d[i])
            c.offers.n = 0
            self._remove_caller(slot)
            for i in range(others.n):
                b = <int>others.d[i]
                self._transition(b, TR_CANCEL)
                self.ag[b].offer_caller = -1
                self.out.append((D_CANCELLED, cid, b, qid))
            for i in range(others.n):
                self._available(<int>others.d[i], now)
        finally:
            free(others.d)

    def decline(self, caller, agent, double now):
        self._refused(caller, agent, now, TR_DECLINE)

    def no_answer(self, caller, agent, double now):
        self._refused(caller, agent, now, TR_NO_ANSWER)

    cdef int _refused(self, caller, agent, double now, int trigger) except -1:
        cdef int slot
        cdef int aid = self._offer_pair(caller, agent, &slot)
        self._advance(now)
        self._transition(aid, trigger)
        cdef AgentRec* a = &self.ag[aid]
        cdef CallerRec* c = &self.cs[slot]
        a.offer_caller = -1
        self._ivec_remove_value(&c.offers, aid)
        ivec_insert(&c.excl, c.excl.n, aid)
        if trigger == TR_NO_ANSWER and self.qs[c.queue].no_answer_not_ready:
            a.state = ST_NOT_READY
            self.out.append((D_NOT_READY, aid, c.id, RING_NO_ANSWER))
        if c.offers.n == 0:
            self._requeue(slot, now)
        if self.ag[aid].state == ST_READY:
            self._available(aid, now)
        return 0

    cdef void _ivec_remove_value(self, IVec* v, int64_t x) noexcept:
        cdef int i
        for i in range(v.n):
            if v.d[i] == x:
                ivec_delete(v, i)
                return

    # ---------------------------------------------------------- time & output
    def advance(self, double now):
        self._advance(now)

    def next_deadline(self):
        cdef HEntry e
        while self.tm.n:
            e = self.tm.d[0]
            if self.cs[e.x].in_use and self.cs[e.x].ver == e.b:
                return e.k1
            hvec_pop(&self.tm)
        return INF

    def pop_decisions(self):
        out = self.out
        self.out = []
        return out

    # ------------------------------------------------------------------ queries
    def agent_state(self, agent):
        if not isinstance(agent, int) or agent not in self.skills:
            return ST_LOGGED_OUT
        return self.ag[<int>agent].state

    def agent_stats(self, agent):
        cdef int aid = self._agent(agent)
        return (self.ag[aid].calls, self.ag[aid].talk_s, self.ag[aid].idle_since)

    def caller_info(self, caller):
        cdef int slot = self._caller(caller)
        cdef CallerRec* c = &self.cs[slot]
        return (c.queue, c.state, c.eff, c.tier, c.seq)

    def offered_agents(self, caller):
        cdef int slot = self._caller(caller)
        return tuple(self.cs[slot].offers.d[i] for i in range(self.cs[slot].offers.n))

    def queue_length(self, queue):
        return self.qs[self._queue(queue)].count

    cdef list _fifo_slots(self, int qid):
        cdef QueueRec* q = &self.qs[qid]
        return [<int>q.fifo[lv].d[i] for lv in range(NLEVELS) for i in range(q.fifo[lv].n)]

    def waiting_callers(self, queue):
        cdef int qid = self._queue(queue)
        keyed = sorted([(-self.cs[<int>s].eff, self.cs[<int>s].seq, self.cs[<int>s].id) for s in self._fifo_slots(qid)])
        return [k[2] for k in keyed]

    def free_agents(self, queue):
        cdef int qid = self._queue(queue)
        return sorted(a for a in self.members[qid] if self.ag[<int>a].state == ST_READY)

    def position(self, caller):
        cdef int slot = self._caller(caller)
        cdef CallerRec* c = &self.cs[slot]
        cdef IVec* sv
        if c.state == C_OFFERED:
            return 0
        if c.state == C_STICKY:
            sv = &self.ag[c.sticky_agent].sticky
            others = [<int>sv.d[i] for i in range(sv.n)]
        else:
            others = self._fifo_slots(c.queue)
        cdef int n = 1
        for o in others:
            if o != slot and self._better(o, slot):
                n += 1
        return n

    def expected_wait_s(self, caller):
        cdef int slot = self._caller(caller)
        pos = self.position(caller)
        if pos == 0:
            return 0.0
        cdef CallerRec* c = &self.cs[slot]
        staffed = 0
        for aid, tier in self.members[c.queue].items():
            if tier <= c.tier and ST_READY <= self.ag[<int>aid].state <= ST_WRAPUP:
                staffed += 1
        if staffed == 0:
            return INF
        return pos * self._aht(c.queue) / staffed

    def average_handle_time_s(self, queue):
        return self._aht(self._queue(queue))

    cdef double _aht(self, int qid):
        cdef QueueRec* q = &self.qs[qid]
        if q.n_handle == 0:
            return q.default_aht
        # summed in insertion-slot order, as Python's sum() over the list
        cdef double s = 0.0
        cdef int i
        for i in range(q.n_handle):
            s += q.handle_times[i]
        return s / q.n_handle

    # ============================================================== internals
    cdef inline bint _better(self, int a, int b) noexcept:
        """Caller order: higher effective priority, then earlier seq (b=-1: none)."""
        if b < 0:
            return True
        cdef CallerRec* x = &self.cs[a]
        cdef CallerRec* y = &self.cs[b]
        return x.eff > y.eff or (x.eff == y.eff and x.seq < y.seq)

    cdef int _end_wrapup(self, int aid, int old, double now) except -1:
        cdef AgentRec* a = &self.ag[aid]
        cdef QueueRec* q
        if old == ST_WRAPUP and a.call_queue >= 0:
            q = &self.qs[a.call_queue]
            if q.n_handle < q.window:
                q.handle_times[q.n_handle] = now - a.busy_since
                q.n_handle += 1
            else:
                q.handle_times[q.handle_pos] = now - a.busy_since
                q.handle_pos = (q.handle_pos + 1) % q.window
            a.call_queue = -1
        return 0

    cdef int _leave(self, int aid, int old, double now) except -1:
        cdef AgentRec* a = &self.ag[aid]
        cdef int slot
        cdef CallerRec* c
        if old == ST_READY:
            self._unfree(aid)
        elif old == ST_RESERVED:
            slot = a.offer_caller
            c = &self.cs[slot]
            a.offer_caller = -1
            self._ivec_remove_value(&c.offers, aid)
            self.out.append((D_CANCELLED, c.id, aid, c.queue))
            if c.offers.n == 0:
                self._requeue(slot, now)
        return 0

    # ---- free containers
    # A free agent sits once in each of its eligibility classes (Cls): an
    # append to the class's dense array, plus a sorted insert when the class
    # has an ordered-family container.  A small class answers a heap-family
    # query by scanning its dense array for the minimum key (dropping stale
    # entries in the same pass); a class above idx_hi free agents also keeps
    # one heap per heap-family container, as PyAcd does for every container.
    # Both give the minimum of the same keys over the same free agents, so
    # the decisions are PyAcd's.
    cdef int _push_free(self, int clid, int aid, double score) except -1:
        """Add free agent ``aid`` (skill score ``score``) to class ``clid``."""
        cdef Cls* k = &self.cl[clid]
        cdef AgentRec* a = &self.ag[aid]
        cdef IVec* lst
        cdef DEntry* d
        cdef HEntry e
        cdef Cont* q
        cdef DVec* v = &k.d
        cdef int i, cap
        cdef void* p
        k.live += 1
        if k.ord >= 0:
            lst = &self.cn[k.ord].o
            ivec_insert(lst, ivec_bisect_right(lst, a.key), a.key)
        if v.n == v.cap:
            cap = v.cap * 2 if v.cap else 16
            p = realloc(v.d, cap * sizeof(DEntry))
            if p == NULL:
                raise MemoryError()
            v.d = <DEntry*>p
            v.cap = cap
        d = &v.d[v.n]
        v.n += 1
        d.idle = a.idle_since
        d.talk = a.talk_s
        d.calls = <double>a.calls
        d.score = score
        d.key = a.key
        d.epoch = self.ep[aid]
        if k.indexed:
            for i in range(k.n_hc):
                q = &self.cn[k.hc[i]]
                _hkey(q.kind, q.idle_weight, q.skill_weight, d, &e)
                hvec_push(&q.h, e)
                if q.h.n > 2 * k.live + 64:
                    self._compact(&q.h)
            if v.n > 2 * k.live + 64:
                self._dense_compact(clid)
        elif k.live > self.idx_hi and k.n_hc:
            self._dense_compact(clid)
            k.indexed = 1
            for i in range(k.n_hc):
                self._fill_heap(clid, k.hc[i])
        elif v.n > 2 * k.live + 64:
            self._dense_compact(clid)
        return 0

    cdef void _dense_compact(self, int clid) noexcept:
        cdef DVec* v = &self.cl[clid].d
        cdef int i, j = 0
        for i in range(v.n):
            if self.ep[<int>(v.d[i].key & AGENT_MASK)] == v.d[i].epoch:
                if j != i:
                    v.d[j] = v.d[i]
                j += 1
        v.n = j

    cdef int _fill_heap(self, int clid, int cid) except -1:
        """Heap of container ``cid`` from its class's (compacted) dense array."""
        cdef DVec* v = &self.cl[clid].d
        cdef Cont* q = &self.cn[cid]
        cdef HEntry* p
        cdef int i
        if q.h.cap < v.n:
            p = <HEntry*>realloc(q.h.d, v.n * sizeof(HEntry))
            if p == NULL:
                raise MemoryError()
            q.h.d = p
            q.h.cap = v.n
        for i in range(v.n):
            _hkey(q.kind, q.idle_weight, q.skill_weight, &v.d[i], &q.h.d[i])
        q.h.n = v.n
        for i in range(v.n // 2 - 1, -1, -1):
            h_siftdown(&q.h, i)
        return 0

    cdef void _compact(self, HVec* h) noexcept:
        cdef int i, j = 0
        for i in range(h.n):
            if self._valid(&h.d[i]):
                h.d[j] = h.d[i]
                j += 1
        h.n = j
        for i in range(j // 2 - 1, -1, -1):
            h_siftdown(h, i)

    cdef inline bint _valid(self, HEntry* e) noexcept:
        # Every exit from READY bumps the epoch, so a matching epoch means
        # the agent is still READY since the push (PyAcd also checks state).
        return self.ep[e.a] == e.b

    cdef void _unfree(self, int aid) noexcept:
        cdef AgentRec* a = &self.ag[aid]
        cdef int i, j
        cdef Cls* k
        cdef IVec* lst
        self.epoch_counter += 1
        self.ep[aid] = self.epoch_counter
        for i in range(a.n_ac):
            k = &self.cl[a.ac[i].cont]
            k.live -= 1
            if k.ord >= 0:
                lst = &self.cn[k.ord].o
                ivec_delete(lst, ivec_bisect_left(lst, a.key))
            if k.indexed and k.live < self.idx_lo:
                k.indexed = 0
                for j in range(k.n_hc):
                    self.cn[k.hc[j]].h.n = 0

    cdef void _scan(self, int clid, Cont* q, CallerRec* c, HEntry* best, bint* have) noexcept:
        """Minimum key of container ``q`` over its class's free agents not
        excluded by ``c`` into best/have; drops stale entries as it goes."""
        cdef DVec* v = &self.cl[clid].d
        cdef DEntry* d
        cdef HEntry e
        cdef int i, j = 0, aid, s = q.kind
        cdef double k1, iw = q.idle_weight, sw = q.skill_weight
        for i in range(v.n):
            d = &v.d[i]
            aid = <int>(d.key & AGENT_MASK)
            if self.ep[aid] != d.epoch:
                continue
            if j != i:
                v.d[j] = d[0]
            j += 1
            # cheap reject on the first key component (most entries)
            if s == S_LONGEST_IDLE:
                k1 = d.idle
            elif s == S_FEWEST_CALLS:
                k1 = d.calls
            elif s == S_LEAST_TALK_TIME:
                k1 = d.talk
            elif s == S_BEST_SKILL:
                k1 = -d.score
            else:
                k1 = iw * d.idle - sw * d.score
            if have[0] and k1 > best.k1:
                continue
            if c.excl.n and self._excluded(c, aid):
                continue
            _hkey(s, iw, sw, d, &e)
            if not have[0] or h_lt(&e, best):
                best[0] = e
                have[0] = True
        v.n = j

    cdef inline bint _excluded(self, CallerRec* c, int aid) noexcept:
        cdef int i
        for i in range(c.excl.n):
            if c.excl.d[i] == aid:
                return True
        return False

    cdef int _available(self, int aid, double now) except -1:
        cdef AgentRec* a = &self.ag[aid]
        cdef int best = -1, i, j, lv, m, slot
        cdef QueueRec* q
        cdef IVec* f
        cdef CallerRec* c
        for i in range(a.sticky.n):
            slot = <int>a.sticky.d[i]
            if self._better(slot, best):
                best = slot
        cdef unsigned int bits
        for i in range(a.n_memb if self.n_waiting else 0):
            bits = <unsigned int>self.qwait[a.memb_queue[i]]
            if bits == 0:
                continue
            q = &self.qs[a.memb_queue[i]]
            m = a.memb_tier[i]
            lv = -1
            while bits:  # non-empty levels only, ascending as before
                lv += 1
                if (bits & 1) == 0:
                    bits >>= 1
                    continue
                bits >>= 1
                f = &q.fifo[lv]
                for j in range(f.n):
                    slot = <int>f.d[j]
                    c = &self.cs[slot]
                    if c.tier < m:
                        break
                    if c.excl.n and self._excluded(c, aid):
                        continue
                    if self._better(slot, best):
                        best = slot
                    break
        if best < 0:
            for i in range(a.n_ac):
                self._push_free(a.ac[i].cont, aid, a.ac[i].score)
            return 0
        if self.cs[best].state == C_STICKY:
            self._ivec_remove_value(&a.sticky, best)
        else:
            self._fifo_remove(best)
        self._offer_one(best, aid, False)
        return 0

    cdef uint64_t _random(self) noexcept:
        # splitmix64 (Steele, Lea, Flood 2014)
        self.rng += <uint64_t>0x9E3779B97F4A7C15
        cdef uint64_t z = self.rng
        z = (z ^ (z >> 30)) * <uint64_t>0xBF58476D1CE4E5B9
        z = (z ^ (z >> 27)) * <uint64_t>0x94D049BB133111EB
        return z ^ (z >> 31)

    cdef int _find_agents(self, int slot, IVec* res) except -1:
        """Best free agent(s) for waiting caller ``slot``; appended to res."""
        cdef CallerRec* c = &self.cs[slot]
        cdef QueueRec* q = &self.qs[c.queue]
        cdef int s = q.strategy, t, i, n, total, ntiers = c.tier + 1
        cdef IVec* lst
        cdef int64_t after, first, k
        cdef uint64_t r
        cdef IVec cand
        cdef HEntry best, e
        cdef bint have = False
        best.k1 = 0.0
        best.k2 = 0.0
        best.a = 0
        best.b = 0
        best.x = 0
        cdef HVec* heap
        cdef Cont* cont
        cdef HVec held
        cdef int live
        if s == S_TOP_DOWN:  # smallest non-excluded key over the tiers
            first = -1
            for t in range(ntiers):
                lst = &self.cn[q.cont[t]].o
                i = 0
                while i < lst.n and c.excl.n and self._excluded(c, <int>(lst.d[i] & AGENT_MASK)):
                    i += 1
                if i < lst.n and (first < 0 or lst.d[i] < first):
                    first = lst.d[i]
            if first >= 0:
                ivec_insert(res, 0, first & AGENT_MASK)
            return 0
        if s == S_RING_ALL:
            for t in range(ntiers):
                lst = &self.cn[q.cont[t]].o
                for i in range(lst.n):
                    if not (c.excl.n and self._excluded(c, <int>(lst.d[i] & AGENT_MASK))):
                        ivec_insert(res, ivec_bisect_right(res, lst.d[i]), lst.d[i])
            for i in range(res.n):
                res.d[i] = res.d[i] & AGENT_MASK
            return 0
        if s == S_ROUND_ROBIN:
            after = -1
            first = -1
            for t in range(ntiers):
                lst = &self.cn[q.cont[t]].o
                i = ivec_bisect_right(lst, q.rr_last)
                while i < lst.n and c.excl.n and self._excluded(c, <int>(lst.d[i] & AGENT_MASK)):
                    i += 1
                if i < lst.n and (after < 0 or lst.d[i] < after):
                    after = lst.d[i]
                i = 0
                while i < lst.n and c.excl.n and self._excluded(c, <int>(lst.d[i] & AGENT_MASK)):
                    i += 1
                if i < lst.n and (first < 0 or lst.d[i] < first):
                    first = lst.d[i]
            k = after if after >= 0 else first
            if k >= 0:
                ivec_insert(res, 0, k & AGENT_MASK)
            return 0
        if s == S_RANDOM:
            if c.excl.n:
                cand.d = NULL
                cand.n = cand.cap = 0
                try:
                    for t in range(ntiers):
                        lst = &self.cn[q.cont[t]].o
                        for i in range(lst.n):
                            if not self._excluded(c, <int>(lst.d[i] & AGENT_MASK)):
                                ivec_insert(&cand, cand.n, lst.d[i])
                    if cand.n:
                        r = self._random() % <uint64_t>cand.n
                        ivec_insert(res, 0, cand.d[r] & AGENT_MASK)
                finally:
                    free(cand.d)
                return 0
            total = 0
            for t in range(ntiers):
                total += self.cn[q.cont[t]].o.n
            if total == 0:
                return 0
            r = self._random() % <uint64_t>total
            for t in range(ntiers):
                n = self.cn[q.cont[t]].o.n
                if r < <uint64_t>n:
                    ivec_insert(res, 0, self.cn[q.cont[t]].o.d[r] & AGENT_MASK)
                    return 0
                r -= n
            return 0
        held.d = NULL
        held.n = held.cap = 0
        try:
            for t in range(ntiers):
                cont = &self.cn[q.cont[t]]
                if not self.cl[cont.cls].indexed:
                    self._scan(cont.cls, cont, c, &best, &have)
                    continue
                heap = &cont.h
                live = self.cl[cont.cls].live
                if heap.n > live + (live >> 1) + 16:
                    # mostly stale: one linear filter + heapify is cheaper
                    # than a sift-down per stale head (same minimum either way)
                    self._compact(heap)
                held.n = 0
                while heap.n:
                    e = heap.d[0]
                    if not self._valid(&e):
                        hvec_pop(heap)
                    elif c.excl.n and self._excluded(c, <int>e.a):
                        hvec_push(&held, hvec_pop(heap))
                    else:
                        if not have or h_lt(&e, &best):
                            best = e
                            have = True
                        break
                for i in range(held.n):
                    hvec_push(heap, held.d[i])
        finally:
            free(held.d)
        if have:
            ivec_insert(res, 0, best.a)
        return 0

    cdef int _offer(self, int slot, IVec* agents, bint in_free) except -1:
        """Reserve ``agents`` (ownership of agents.d passes to the caller;
        ``agents`` may be the caller's own offers vector, built in place so
        that an offer allocates nothing once the slot's buffer exists)."""
        cdef CallerRec* c = &self.cs[slot]
        cdef int i, aid
        c.state = C_OFFERED
        if agents != &c.offers:
            free(c.offers.d)
            c.offers = agents[0]
        for i in range(c.offers.n):
            aid = <int>c.offers.d[i]
            self._transition(aid, TR_OFFER)
            if in_free:
                self._unfree(aid)
            else:
                self.epoch_counter += 1
                self.ep[aid] = self.epoch_counter
            self.ag[aid].offer_caller = slot
            self.out.append((D_OFFER, c.id, aid, c.queue))
        if self.qs[c.queue].strategy == S_ROUND_ROBIN:
            self.qs[c.queue].rr_last = self.ag[<int>c.offers.d[0]].key
        self._schedule(slot)
        return 0

    # ---- caller placement
    cdef int _enter(self, int slot, int qid, double now, int sa, double sticky_s) except -1:
        cdef QueueRec* q = &self.qs[qid]
        cdef CallerRec* c = &self.cs[slot]
        if q.max_length and q.count >= q.max_length:
            self.out.append((D_FULL, c.id, qid, q.full_dest))
            self._release_slot(slot)
            return 0
        self.seq_counter += 1
        c.seq = self.seq_counter
        c.queue = qid
        c.enq_at = now
        c.tier = 0
        c.eff = c.priority
        c.age_steps = 0
        c.in_use = 1
        self._ht_put(c.id, slot)
        q.count += 1
        if sa >= 0:
            c.state = C_STICKY
            c.sticky_agent = sa
            c.sticky_until = now + sticky_s
            self._update_clock(slot, now)
            self._schedule(slot)
            if self.ag[sa].state == ST_READY:
                self._offer_one(slot, sa, True)
            else:
                ivec_insert(&self.ag[sa].sticky, self.ag[sa].sticky.n, slot)
            return 0
        c.state = C_WAITING
        self._update_clock(slot, now)
        self._schedule(slot)
        self._wait(slot, now)
        return 0

    cdef int _offer_one(self, int slot, int aid, bint in_free) except -1:
        cdef CallerRec* c = &self.cs[slot]
        c.offers.n = 0  # the previous offers are replaced, as _offer does
        ivec_insert(&c.offers, 0, aid)
        self._offer(slot, &c.offers, in_free)
        return 0

    cdef int _release_slot(self, int slot) except -1:
        """Return a slot to the free list (its exclusions are kept until
        the slot is reused: enqueue clears them)."""
        self.cs[slot].in_use = 0
        self.cs[slot].ver = -1
        ivec_insert(&self.free_slots, self.free_slots.n, slot)
        return 0

    cdef int _reenter(self, int slot, int qid, double now, int priority) except -1:
        cdef CallerRec* c = &self.cs[slot]
        c.priority = priority
        c.state = C_WAITING
        c.sticky_agent = -1
        c.sticky_until = INF
        self._enter(slot, qid, now, -1, 0.0)
        return 0

    cdef int _wait(self, int slot, double now) except -1:
        cdef IVec* res = &self.cs[slot].offers  # a waiting caller has no offers: reuse its buffer
        res.n = 0
        self._find_agents(slot, res)
        if res.n:
            self._offer(slot, res, True)
        else:
            self._fifo_insert(slot)
        return 0

    cdef int _requeue(self, int slot, double now) except -1:
        cdef CallerRec* c = &self.cs[slot]
        if c.sticky_agent >= 0:
            c.sticky_agent = -1
            c.sticky_until = INF
        c.state = C_WAITING
        self._schedule(slot)
        if self._due(slot, now):
            self._fifo_insert(slot)
            self._fire(slot, now)
        else:
            self._wait(slot, now)
        return 0

    cdef int _fifo_insert(self, int slot) except -1:
        cdef CallerRec* c = &self.cs[slot]
        cdef IVec* f = &self.qs[c.queue].fifo[c.priority]
        ivec_insert(f, self._fifo_find(f, c.seq), slot)
        self.qwait[c.queue] |= 1 << c.priority
        self.n_waiting += 1
        return 0

    cdef int _fifo_find(self, IVec* f, int64_t seq) noexcept:
        cdef int lo = 0, hi = f.n, mid
        while lo < hi:
            mid = (lo + hi) >> 1
            if self.cs[<int>f.d[mid]].seq < seq:
                lo = mid + 1
            else:
                hi = mid
        return lo

    cdef void _fifo_remove(self, int slot) noexcept:
        cdef CallerRec* c = &self.cs[slot]
        cdef IVec* f = &self.qs[c.queue].fifo[c.priority]
        ivec_delete(f, self._fifo_find(f, c.seq))
        if f.n == 0:
            self.qwait[c.queue] &= ~(1 << c.priority)
        self.n_waiting -= 1

    cdef int _detach_caller(self, int slot, IVec* released) except -1:
        cdef CallerRec* c = &self.cs[slot]
        cdef int i, aid
        if c.state == C_OFFERED:
            for i in range(c.offers.n):
                aid = <int>c.offers.d[i]
                self._transition(aid, TR_CANCEL)
                self.ag[aid].offer_caller = -1
                self.out.append((D_CANCELLED, c.id, aid, c.queue))
                if released != NULL:
                    ivec_insert(released, released.n, aid)
            c.offers.n = 0
        elif c.state == C_STICKY:
            self._ivec_remove_value(&self.ag[c.sticky_agent].sticky, slot)
        else:
            self._fifo_remove(slot)
        self._remove_caller(slot)
        return 0

    cdef int _remove_caller(self, int slot) except -1:
        """Forget the caller id (the slot itself is reused unless re-entered)."""
        cdef CallerRec* c = &self.cs[slot]
        self._ht_del(c.id)
        self.qs[c.queue].count -= 1
        self._release_slot(slot)   # transfer/overflow take it back (_take_slot)
        return 0

    # ---- caller timers
    cdef void _update_clock(self, int slot, double now) noexcept:
        cdef CallerRec* c = &self.cs[slot]
        cdef QueueRec* q = &self.qs[c.queue]
        cdef int cap
        while c.tier + 1 < q.n_tiers and c.enq_at + q.thresholds[c.tier + 1] <= now:
            c.tier += 1
        if q.ageing_interval_s > 0:
            cap = c.priority if c.priority > q.ageing_max else q.ageing_max
            while c.eff < cap and c.enq_at + (c.age_steps + 1) * q.ageing_interval_s <= now:
                c.age_steps += 1
                c.eff = c.priority + c.age_steps * q.ageing_step
                if c.eff > cap:
                    c.eff = cap

    cdef double _next_time(self, int slot) noexcept:
        cdef CallerRec* c = &self.cs[slot]
        cdef QueueRec* q = &self.qs[c.queue]
        cdef double t = INF, x
        cdef int cap
        if c.tier + 1 < q.n_tiers:
            t = c.enq_at + q.thresholds[c.tier + 1]
        if q.ageing_interval_s > 0:
            cap = c.priority if c.priority > q.ageing_max else q.ageing_max
            if c.eff < cap:
                x = c.enq_at + (c.age_steps + 1) * q.ageing_interval_s
                if x < t:
                    t = x
        if c.state == C_STICKY and c.sticky_until < t:
            t = c.sticky_until
        if c.state != C_OFFERED:
            if q.timeout_s > 0:
                x = c.enq_at + q.timeout_s
                if x < t:
                    t = x
            if q.overflow_after_s > 0:
                x = c.enq_at + q.overflow_after_s
                if x < t:
                    t = x
        return t

    cdef int _schedule(self, int slot) except -1:
        cdef CallerRec* c = &self.cs[slot]
        cdef double t = self._next_time(slot)
        cdef HEntry e
        self.ver_counter += 1
        c.ver = self.ver_counter
        if t < INF:
            e.k1 = t
            e.k2 = 0.0
            e.a = c.seq
            e.b = self.ver_counter
            e.x = slot
            hvec_push(&self.tm, e)
        return 0

    cdef bint _due(self, int slot, double now) noexcept:
        cdef CallerRec* c = &self.cs[slot]
        cdef QueueRec* q = &self.qs[c.queue]
        return (q.timeout_s > 0 and c.enq_at + q.timeout_s <= now) or (
            q.overflow_after_s > 0 and c.enq_at + q.overflow_after_s <= now)

    cdef int _fire(self, int slot, double now) except -1:
        cdef CallerRec* c = &self.cs[slot]
        cdef int qid = c.queue
        cdef QueueRec* q = &self.qs[qid]
        cdef int64_t cid = c.id
        self._detach_caller(slot, NULL)
        if q.timeout_s > 0 and c.enq_at + q.timeout_s <= now:
            self.out.append((D_TIMEOUT, cid, qid, q.timeout_dest))
            return 0
        if q.overflow_queue not in self.cfgs:
            self.out.append((D_TIMEOUT, cid, qid, q.timeout_dest))
            return 0
        self.out.append((D_OVERFLOW, cid, qid, q.overflow_queue))
        self._take_slot(slot)
        self._reenter(slot, q.overflow_queue, now, c.priority)
        return 0

    cdef void _take_slot(self, int slot) noexcept:
        """Undo the release of ``slot`` done by _remove_caller (re-entry)."""
        cdef int i
        for i in range(self.free_slots.n - 1, -1, -1):
            if self.free_slots.d[i] == slot:
                ivec_delete(&self.free_slots, i)
                return

    cdef int _advance(self, double now) except -1:
        if not now >= self.now:
            if now != now:
                raise AcdStateError("now is NaN")
            raise AcdStateError(f"time went backwards: now={now} after {self.now}")
        if now == INF or now == -INF:
            raise AcdStateError(f"now must be finite, got {now}")
        self.now = now
        cdef HEntry e
        cdef CallerRec* c
        while self.tm.n and self.tm.d[0].k1 <= now:
            e = hvec_pop(&self.tm)
            c = &self.cs[e.x]
            if not c.in_use or c.ver != e.b:
                continue
            self._on_timer(e.x, now)
        return 0

    cdef int _on_timer(self, int slot, double now) except -1:
        cdef CallerRec* c = &self.cs[slot]
        cdef int old_tier = c.tier
        cdef IVec res
        self._update_clock(slot, now)
        if c.state == C_OFFERED:
            self._schedule(slot)
            return 0
        if self._due(slot, now):
            self._fire(slot, now)
            return 0
        if c.state == C_STICKY and c.sticky_until <= now:
            self._ivec_remove_value(&self.ag[c.sticky_agent].sticky, slot)
            c.sticky_agent = -1
            c.sticky_until = INF
            c.state = C_WAITING
            self._schedule(slot)
            self._wait(slot, now)
            return 0
        self._schedule(slot)
        if c.state == C_WAITING and c.tier != old_tier:
            res.d = NULL
            res.n = res.cap = 0
            try:
                self._find_agents(slot, &res)
            except BaseException:
                free(res.d)
                raise
            if res.n:
                self._fifo_remove(slot)
                self._offer(slot, &res, True)
            else:
                free(res.d)
        return 0
