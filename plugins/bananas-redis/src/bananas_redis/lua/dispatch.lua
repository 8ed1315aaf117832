--[[
bananas-redis dispatcher: every state transition of one queue, atomically. Redis 6.2+ (uses LPOP with a count).

Called as  EVALSHA <sha> 10 <ready> <scheduled> <leases> <dead> <seq> <signal> <types> <count> <wake> <head>
           <command> <job-prefix> <now> ...
(take also as EVALSHA <sha> 11 ... <head> <budget> take ...: see the take command.)

Keys (all of one queue, all under the same hash tag {<prefix>:<queue>}, so one call touches one cluster slot):

  KEYS[1] {p:q}:ready      LIST    the 0.1 ready list: ids made ready by 0.1 processes. Never written by this
                                   script except to pop: take drains it first for fetches of every type or of the
                                   type '' (the type of a 0.1 job is in its body, which this script cannot read);
                                   an entry whose record has a type (a 0.2 job a 0.1 process made ready) is moved
                                   to the head of its type's ZSET instead of being handed out.
  KEYS[2] {p:q}:scheduled  ZSET    id -> eta; delayed jobs and retries. move_due moves due ones to ready.
  KEYS[3] {p:q}:leases     ZSET    id -> lease expiry of every running job. renew rescores, reap recovers.
  KEYS[4] {p:q}:dead       ZSET    id -> dead_at; the dead letters of the queue.
  KEYS[5] {p:q}:seq        STRING  counter: fencing tokens, the sequence numbers that order ties, and the
                                   position of every job made ready at the tail.
  KEYS[6] {p:q}:signal     LIST    wake-up tokens of the 0.1 list: min(len(ready), 16) <= len <= len(ready).
  KEYS[7] {p:q}:types      ZSET    job type -> position of the head of its ready ZSET, for every non-empty one.
  KEYS[8] {p:q}:count      STRING  how many entries the ready ZSETs of all types hold together.
  KEYS[9] {p:q}:wake       LIST    wake-up tokens of untyped fetchers: min(count, 16) <= len <= count.
  KEYS[10] {p:q}:head      STRING  counter (<= 0, going down): positions of jobs put back at the head.
  KEYS[1]..':'..<type>     ZSET    {p:q}:ready:<type>: id -> position, the ready jobs of one job type ('' for an
                                   envelope without one). Positions come from KEYS[5] at the tail (enqueue, retry,
                                   move_due, requeue_dead) and from KEYS[10] at the head (release, reap), so
                                   ordering all types' entries by position is exactly the one FIFO list of 0.1.
                                   take reads the head (ZRANGE), checks every entry, then removes exactly the
                                   entries it examined (see "Malformed entries").
  KEYS[6]..':'..<type>     LIST    {p:q}:signal:<type>: wake-up tokens of fetchers of that type, kept between
                                   min(n, 16) and n long (n = ZCARD of the type's ready ZSET; see sync_list).
  ARGV[2] .. <id>          HASH    {p:q}:job:<id>, the job record (the key is built here from ARGV[2], which the
                                   client derives from the same hash tag, so it lives on the same slot):
                                     state        ready | scheduled | running | completed | dead, or
                                                  cancelled | expired (set by lua/control.lua)
                                     body         the encoded job as last stored
                                     deliveries   hand-outs so far;  crashes  hand-outs that ended in an expired lease
                                     token        fencing token of the live hand-out (absent before the first)
                                     lease_until  while running;  eta  while scheduled
                                     seq          orders jobs of equal eta / dead_at (from KEYS[5])
                                     type         the job type ('' none; absent in a 0.1 record)
                                     reason, dead_at   when dead
                                     updated_at   last transition;  expires_at  retention deadline (client clock)
                                     started_at   when the last hand-out began (kept by ack: a completed job's start)
                                   completed and dead records also carry a Redis EXPIRE (completed_ttl / dead_ttl).

Malformed entries. take never fails half-way: it examines every entry of a run (HMGET, and TYPE where that fails) before it pops
or writes anything, and only writes keys whose type it checked. An entry of a ready ZSET or of the 0.1 list whose record is
  a hash in state ready with a body       is handed out;
  a hash in state ready without a body    is dead-lettered (reason 'malformed record: no body');
  a STRING                                is dead-lettered losing nothing: its value becomes the body of a new dead
                                          record (reason 'malformed record: a string, not a hash');
  a list, set, zset or stream             is dropped from the ready list; the key is left alone;
  missing, or in another state            is dropped (a stale entry), as is a second entry of the same id.
take reports each entry it did not hand out ({id, what} notes), and the client logs one warning per entry.
dead_list shows a letter without a body with an empty one; requeue_dead leaves such a letter dead.

Times are Unix seconds from the client's clock (ARGV[3] = now), never Redis TIME, so tests can move time. Numbers
that go back to the client as floats are returned as strings (Redis truncates Lua numbers to integers).
The registry keys ({p}:queues, {p}:queue-seq) and the id home keys ({p}:home:<id>) sit outside the queue's
hash tag and are never touched here (see keys.py). A fencing token seen by clients is (KEYS[5] counter << 16) | queue number.
]]

local K_READY, K_SCHED, K_LEASES, K_DEAD, K_SEQ, K_SIGNAL = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local K_TYPES, K_COUNT, K_WAKE, K_HEAD = KEYS[7], KEYS[8], KEYS[9], KEYS[10]
local K_BUDGET = KEYS[11] -- take only: a counter shared by the takes of one fetch over several queues (see take)
local cmd = ARGV[1]
local JOB = ARGV[2]
local now = ARGV[3]
local nnow = tonumber(now)
local SIGNAL_CAP = 16
local CHUNK = 1000 -- elements per variadic call (unpack() has a stack limit)

local function push_many(verb, key, items)
    for i = 1, #items, CHUNK do
        redis.call(verb, key, unpack(items, i, math.min(i + CHUNK - 1, #items)))
    end
end

-- The ready ZSET and the wake-up list of one job type (same hash tag as every key of the queue).
local function rkey(t) return K_READY .. ':' .. t end
local function skey(t) return K_SIGNAL .. ':' .. t end

-- Keep a wake-up list between min(n, SIGNAL_CAP) and n long, where n counts the ready jobs it stands for: a blocked
-- fetcher wakes iff work exists, a woken fetcher that takes part of a long queue passes the baton on, and an empty
-- queue leaves no stale token.
local function sync_list(sig, n)
    if n <= 0 then
        redis.call('DEL', sig)
        return
    end
    local have = redis.call('LLEN', sig)
    local want = math.min(n, SIGNAL_CAP)
    if have < want then
        local ones = {}
        for i = 1, want - have do ones[i] = '1' end
        redis.call('RPUSH', sig, unpack(ones))
    elseif have > n then
        redis.call('LTRIM', sig, 0, n - 1)
    end
end

-- The 0.1 list (KEYS[1]) and its wake-up list (KEYS[6]), exactly as 0.1 keeps them.
local function sync_legacy() sync_list(K_SIGNAL, redis.call('LLEN', K_READY)) end
-- The queue-wide wake-up list of untyped fetchers: as long as the typed ready count (KEYS[8]).
local function sync_wake() sync_list(K_WAKE, tonumber(redis.call('GET', K_COUNT)) or 0) end
local function sync_type_signal(t) sync_list(skey(t), redis.call('ZCARD', rkey(t))) end

-- Rescore type t in the index by the position of its head (drop it when its ZSET is empty); returns that score.
local function reindex(t)
    local h = redis.call('ZRANGE', rkey(t), 0, 0, 'WITHSCORES')
    if #h == 0 then
        redis.call('ZREM', K_TYPES, t)
        return nil
    end
    redis.call('ZADD', K_TYPES, h[2], t)
    return h[2]
end

-- The job type of a record (hash field 'type'); false for a 0.1 record, which has none.
local function type_of_record(key) return redis.call('HGET', key, 'type') end

-- Make ready jobs: ids[i] of type types[i] (types may be a single string: every id has that type), in order. At the
-- tail (head = false) each takes the next position (KEYS[5] counter, > 0), at the head (head = true) positions below
-- every one in use (KEYS[10], <= 0), keeping the ids' order. One ZADD per type; every touched type is reindexed and
-- its wake-up list synced, then the typed ready count and the wake list of untyped fetchers.
local function push_ready(ids, types, head)
    local n = #ids
    if n == 0 then return end
    local base
    if head then
        base = redis.call('DECRBY', K_HEAD, n)
    else
        base = redis.call('INCRBY', K_SEQ, n) - n + 1
    end
    local by_type, order
    if type(types) == 'string' then -- the common case: one type (a single enqueue, an enqueue_many of one job)
        local args = {}
        for i = 1, n do
            args[2 * i - 1] = base + i - 1
            args[2 * i] = ids[i]
        end
        by_type, order = { [types] = args }, { types }
    else
        by_type, order = {}, {}
        for i = 1, n do
            local t = types[i]
            local args = by_type[t]
            if not args then
                args = {}
                by_type[t] = args
                order[#order + 1] = t
            end
            args[#args + 1] = base + i - 1
            args[#args + 1] = ids[i]
        end
    end
    local added = 0
    for _, t in ipairs(order) do
        local args = by_type[t]
        local key = rkey(t)
        for i = 1, #args, CHUNK do
            added = added + redis.call('ZADD', key, unpack(args, i, math.min(i + CHUNK - 1, #args)))
        end
        redis.call('ZADD', K_TYPES, 'LT', args[1], t)
        sync_list(skey(t), redis.call('ZCARD', key))
    end
    sync_list(K_WAKE, redis.call('INCRBY', K_COUNT, added))
end

-- Take a ready entry out of its type's ZSET (or the 0.1 list); returns true if it was there.
local function unready(id, key)
    local t = type_of_record(key)
    if not t then
        local n = redis.call('LREM', K_READY, -1, id)
        if n > 0 then sync_legacy() end
        return n > 0
    end
    if redis.call('ZREM', rkey(t), id) == 0 then return false end
    redis.call('INCRBY', K_COUNT, -1)
    reindex(t)
    sync_type_signal(t)
    sync_wake()
    return true
end

-- The type of a key as a string ('none', 'string', 'hash', 'list', ...).
local function type_of(key)
    return redis.call('TYPE', key)['ok']
end

local function is_live(key, token)
    local f = redis.call('HMGET', key, 'state', 'token')
    return f[1] == 'running' and f[2] == token
end

local function bury(key, id, reason, ttl, expires_at)
    redis.call('HSET', key, 'state', 'dead', 'reason', reason, 'dead_at', now, 'updated_at', now,
        'expires_at', expires_at, 'seq', redis.call('INCR', K_SEQ))
    redis.call('HDEL', key, 'lease_until', 'eta')
    redis.call('ZADD', K_DEAD, now, id)
    redis.call('EXPIRE', key, ttl)
end

-- A new record. deliveries, crashes and token are absent until they change (readers take absent as 0).
local function fresh(key, body, state, jtype)
    redis.call('HSET', key, 'state', state, 'body', body, 'updated_at', now, 'type', jtype)
end

-- Members of a ZSET within [lo, hi] (or newest first), at most `limit`, ties on the score ordered by the
-- record's seq (insertion order), as {id, score} pairs.
local function ordered(zkey, lo, hi, limit, newest_first)
    if limit <= 0 then return {} end
    local items
    if newest_first then
        items = redis.call('ZREVRANGEBYSCORE', zkey, hi, lo, 'WITHSCORES', 'LIMIT', 0, limit)
    else
        items = redis.call('ZRANGEBYSCORE', zkey, lo, hi, 'WITHSCORES', 'LIMIT', 0, limit)
    end
    local list, seen = {}, {}
    for i = 1, #items, 2 do
        seen[items[i]] = true
        list[#list + 1] = { items[i], tonumber(items[i + 1]) }
    end
    if #list == limit then -- pull in every member tied with the boundary score, then cut again after sorting
        local edge = items[#items]
        for _, id in ipairs(redis.call('ZRANGEBYSCORE', zkey, edge, edge)) do
            if not seen[id] then list[#list + 1] = { id, tonumber(edge) } end
        end
    end
    for _, e in ipairs(list) do
        e[3] = tonumber(redis.call('HGET', JOB .. e[1], 'seq')) or 0
    end
    table.sort(list, function(a, b)
        if a[2] ~= b[2] then
            if newest_first then return a[2] > b[2] end
            return a[2] < b[2]
        end
        if newest_first then return a[3] > b[3] end
        return a[3] < b[3]
    end)
    while #list > limit do table.remove(list) end
    return list
end

-- Drop dead letters whose retention ended (dead_at <= cutoff = now - dead_ttl) and their records.
local function expire_dead(cutoff)
    local ids = redis.call('ZRANGEBYSCORE', K_DEAD, '-inf', cutoff)
    for _, id in ipairs(ids) do
        local key = JOB .. id
        if redis.call('HGET', key, 'state') == 'dead' then redis.call('DEL', key) end
    end
    if #ids > 0 then redis.call('ZREMRANGEBYSCORE', K_DEAD, '-inf', cutoff) end
end

-- enqueue's push_ready for new jobs of one type at the tail (a single enqueue, a batch of one job type), in fewer
-- calls while the queue already holds work: the type's index entry is only written when its ZSET was empty (a tail
-- position never lowers a head), and a wake-up list is only counted while the work it stands for was under
-- SIGNAL_CAP (at or above it the list already holds SIGNAL_CAP tokens, so n growing asks for none; a token popped
-- by a fetcher that has not taken yet is put back by that fetcher's take, or by reap if it died, as always).
local function push_tail(ids, t)
    local n = #ids
    if n == 0 then return end
    local base = redis.call('INCRBY', K_SEQ, n) - n + 1
    local key = rkey(t)
    local args = {}
    for i = 1, n do
        args[2 * i - 1] = base + i - 1
        args[2 * i] = ids[i]
    end
    local added = 0
    for i = 1, #args, CHUNK do
        added = added + redis.call('ZADD', key, unpack(args, i, math.min(i + CHUNK - 1, #args)))
    end
    local total = redis.call('ZCARD', key)
    if total - added <= 0 then redis.call('ZADD', K_TYPES, 'LT', args[1], t) end
    if total - added < SIGNAL_CAP then sync_list(skey(t), total) end
    local count = redis.call('INCRBY', K_COUNT, added)
    if count - added < SIGNAL_CAP then sync_list(K_WAKE, count) end
end

if cmd == 'enqueue' then
    -- ARGV[4..]: quadruples id, body, eta ('' = now), job type. Returns 1 (stored) or 0 (a live copy exists) each.
    -- Every record is read before anything is written: a call that fails (a job key of another type: WRONGTYPE;
    -- maxmemory, refused at the first write) stores none of its jobs, so the client can say exactly which are lost.
    -- (A second quadruple of one id meets the first as a live copy, as when records were read one by one.)
    local out, ready, rtypes, one, keys, states, seen = {}, {}, {}, ARGV[7], {}, {}, {}
    for i = 4, #ARGV, 4 do
        local j, key = #keys + 1, JOB .. ARGV[i]
        keys[j], states[j] = key, redis.call('HGET', key, 'state')
    end
    for j = 1, #keys do
        local i = 4 * j
        local id, body, eta, jtype = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
        local key = keys[j]
        local st = states[j]
        if seen[id] then st = 'ready' end
        seen[id] = true
        if st == 'completed' or st == 'dead' or st == 'cancelled' or st == 'expired' then
            if st == 'dead' then redis.call('ZREM', K_DEAD, id) end
            redis.call('DEL', key)
            st = false
        end
        if st then
            out[#out + 1] = 0
        else
            out[#out + 1] = 1
            if eta ~= '' and tonumber(eta) > nnow then
                fresh(key, body, 'scheduled', jtype)
                redis.call('HSET', key, 'eta', eta, 'seq', redis.call('INCR', K_SEQ))
                redis.call('ZADD', K_SCHED, eta, id)
            else
                fresh(key, body, 'ready', jtype)
                ready[#ready + 1] = id
                rtypes[#ready] = jtype
                if jtype ~= one then one = nil end
            end
        end
    end
    if one then push_tail(ready, one) else push_ready(ready, rtypes, false) end
    return out

elseif cmd == 'vacate' then
    -- ARGV[4..] ids that are being enqueued to another queue. A live record stays (1: the new copy must be
    -- withdrawn); a completed or dead one is dropped with its dead letter (0: the id may move).
    local out = {}
    for i = 4, #ARGV do
        local id = ARGV[i]
        local key = JOB .. id
        local st = redis.call('HGET', key, 'state')
        if st == 'ready' or st == 'scheduled' or st == 'running' then
            out[#out + 1] = 1
        else
            if st == 'dead' then redis.call('ZREM', K_DEAD, id) end
            if st then redis.call('DEL', key) end
            out[#out + 1] = 0
        end
    end
    return out

elseif cmd == 'withdraw' then
    -- ARGV[4..] ids this client just stored here although the id is live in another queue: remove each copy
    -- that nobody has taken yet. Returns 1 (withdrawn) or 0 (already taken or gone) per id.
    local out = {}
    for i = 4, #ARGV do
        local id = ARGV[i]
        local key = JOB .. id
        local f = redis.call('HMGET', key, 'state', 'deliveries')
        if (f[1] == 'ready' or f[1] == 'scheduled') and (tonumber(f[2]) or 0) == 0 then
            if f[1] == 'ready' then unready(id, key) else redis.call('ZREM', K_SCHED, id) end
            redis.call('DEL', key)
            out[#out + 1] = 1
        else
            out[#out + 1] = 0
        end
    end
    return out

elseif cmd == 'take' then
    -- ARGV[4] lease_until, [5] limit, [6] dead ttl (s), [7] dead expires_at, [8] '*' (every job type) or '=' (only
    -- the types ARGV[10..]), [9] '' or '+' .. the job type whose wake-up list woke the caller (synced again).
    -- Returns {hand-outs, notes}: hand-outs are id, body, token, deliveries, crashes per leased job; notes are id,
    -- what per ready entry that was not handed out (see the header: malformed records are dead-lettered, stale
    -- entries dropped). The 0.1 list (KEYS[1]) is drained first when every type, or the type '', is asked for; then
    -- the head of the asked types with the lowest position goes out, run by run, so the order across types is the
    -- order they were made ready in.
    -- Every entry of a run is examined (HMGET; TYPE only where that is not a ready hash with a body) before anything
    -- is popped or written, and every write below works on a key whose type was checked, so the script cannot fail
    -- half-way and lose popped ids.
    -- With an 11th key (a STRING counter outside the queue, one per fetch, on a single server only), the takes of
    -- one fetch over several queues are sent together in priority order: each takes at most its limit minus what
    -- the takes before it handed out, and adds what it hands out (a later queue is only looked at if the earlier
    -- ones did not fill the limit, as with one round trip per queue).
    local want = tonumber(ARGV[5])
    if K_BUDGET then
        want = want - (tonumber(redis.call('GET', K_BUDGET)) or 0)
        if want <= 0 then return { {}, {} } end
    end
    local lease_until, dead_ttl, dead_expires = ARGV[4], ARGV[6], ARGV[7]
    local every = ARGV[8] == '*'
    local out, notes = {}, {}
    for _, k in ipairs({ K_LEASES, K_DEAD }) do
        local t = type_of(k)
        if t ~= 'none' and t ~= 'zset' then
            return redis.error_reply('bananas-redis: ' .. k .. ' is a ' .. t .. ', not a zset; nothing was taken')
        end
    end
    local t = type_of(K_SIGNAL)
    if t ~= 'none' and t ~= 'list' then
        return redis.error_reply('bananas-redis: ' .. K_SIGNAL .. ' is a ' .. t .. ', not a list; nothing was taken')
    end
    local seen, moving = {}, {}
    -- legacy: entries of the 0.1 list, where a record with a type (made ready there by a 0.1 process although a 0.2
    -- producer enqueued it) is not handed out but moved to the head of its type ('retype'), for the workers of it.
    local function examine(ids, legacy)
        local plan, ready = {}, 0
        for j, id in ipairs(ids) do
            local key = JOB .. id
            local p = { id = id, key = key }
            -- The common case costs one HMGET; pcall, because HMGET on a key of another type is an error reply.
            local again = seen[id] or (legacy and moving[id])
            local f = (not again) and redis.pcall('HMGET', key, 'state', 'body', 'deliveries', 'crashes', 'type')
            if again then
                p.act, p.what = 'drop', 'dropped from the ready list: a duplicate entry'
            elseif legacy and f.err == nil and f[1] == 'ready' and f[2] and f[5] then
                p.act, p.type = 'retype', f[5]
            elseif f.err == nil and f[1] == 'ready' and f[2] then
                p.act, p.body, p.deliveries, p.crashes = 'run', f[2], (tonumber(f[3]) or 0) + 1, tonumber(f[4]) or 0
                ready = ready + 1
            else
                local kind = type_of(key)
                if kind == 'hash' then
                    if f[1] == 'ready' then
                        p.act, p.what = 'bury', 'malformed record: no body'
                    elseif f[1] then
                        p.act, p.what = 'drop', 'dropped from the ready list: the record is ' .. f[1] .. ', not ready'
                    else
                        p.act, p.what = 'drop', 'dropped from the ready list: the record has no state'
                    end
                elseif kind == 'string' then
                    p.act, p.what, p.body = 'bury_string', 'malformed record: a string, not a hash',
                        redis.call('GET', key)
                elseif kind == 'none' then
                    p.act, p.what = 'drop', 'dropped from the ready list: no record'
                else
                    p.act, p.what = 'drop', 'dropped from the ready list: the record is a ' .. kind ..
                        ', not a hash (key left alone)'
                end
            end
            -- a moved entry (and a duplicate of one) is examined again in its type's ZSET in this very call
            if p.act == 'retype' then moving[id] = true elseif not again then seen[id] = true end
            plan[j] = p
        end
        return plan, ready
    end
    local moved, mtypes = {}, {} -- retyped entries of the 0.1 list, in its order: to the head of their types at once
    local function apply(plan, base)
        for _, p in ipairs(plan) do
            if p.act == 'retype' then
                moved[#moved + 1] = p.id
                mtypes[#moved] = p.type
            elseif p.act == 'run' then
                base = base + 1
                redis.call('HSET', p.key, 'state', 'running', 'token', base, 'deliveries', p.deliveries,
                    'lease_until', lease_until, 'updated_at', now, 'started_at', now)
                redis.call('ZADD', K_LEASES, lease_until, p.id)
                out[#out + 1] = p.id
                out[#out + 1] = p.body
                out[#out + 1] = base
                out[#out + 1] = p.deliveries
                out[#out + 1] = p.crashes
                want = want - 1
            else
                if p.act == 'bury_string' then
                    redis.call('DEL', p.key)
                    fresh(p.key, p.body, 'ready', '')
                end
                if p.act ~= 'drop' then
                    bury(p.key, p.id, p.what, dead_ttl, dead_expires)
                    p.what = 'dead-lettered: ' .. p.what
                end
                notes[#notes + 1] = p.id
                notes[#notes + 1] = p.what
            end
        end
    end
    local legacy, cand, cstr = every, {}, {} -- typed: type -> head position (number), and as Redis wrote it
    if not every and #ARGV >= 10 then
        for i = 10, #ARGV, CHUNK do
            local last = math.min(i + CHUNK - 1, #ARGV)
            local heads = redis.call('ZMSCORE', K_TYPES, unpack(ARGV, i, last))
            for j = i, last do
                if ARGV[j] == '' then legacy = true end
                local h = heads[j - i + 1]
                if h then cand[ARGV[j]], cstr[ARGV[j]] = tonumber(h), h end
            end
        end
    end
    if legacy then -- the 0.1 list: jobs enqueued by 0.1 producers, whose type this script cannot know
        local popped = false
        while want > 0 do
            local ids = redis.call('LRANGE', K_READY, 0, want - 1)
            if #ids == 0 then break end
            local plan, ready = examine(ids, true)
            -- INCRBY first: a counter that is not an integer fails here, before anything was popped.
            local base = redis.call('INCRBY', K_SEQ, ready) - ready
            redis.call('LPOP', K_READY, #ids)
            apply(plan, base)
            popped = true
        end
        -- (a token left while the list is empty is harmless: the BLPOP that takes it consumes it)
        if popped then sync_legacy() end
        push_ready(moved, mtypes, true)
    end
    local touched, count = {}, nil
    while want > 0 do
        local best, bscore, second
        if every then
            local h = redis.call('ZRANGE', K_TYPES, 0, 1, 'WITHSCORES')
            if #h == 0 then break end
            best, bscore, second = h[1], h[2], h[4]
        else
            local bn, sn
            for ty, n in pairs(cand) do
                if not best or n < bn then
                    second, sn = bscore, bn
                    best, bscore, bn = ty, cstr[ty], n
                elseif not second or n < sn then
                    second, sn = cstr[ty], n
                end
            end
            if not best then break end
        end
        local key = rkey(best)
        -- The run of this type that comes before the next type's head.
        local ids
        if second then -- (positions are unique; a tie, from a hand-edited key, still takes the head)
            local upto = tonumber(second) > tonumber(bscore) and '(' .. second or second
            ids = redis.call('ZRANGEBYSCORE', key, '-inf', upto, 'LIMIT', 0, want)
        else
            ids = redis.call('ZRANGE', key, 0, want - 1)
        end
        if #ids > 0 then
            local plan, ready = examine(ids, false)
            local base = redis.call('INCRBY', K_SEQ, ready) - ready
            redis.call('ZREMRANGEBYRANK', key, 0, #ids - 1)
            count = redis.call('INCRBY', K_COUNT, -#ids)
            apply(plan, base)
            touched[best] = true
        end
        local h = reindex(best) -- also repairs an index entry that was out of date (then #ids may be 0)
        if not every then cand[best], cstr[best] = h and tonumber(h), h end
    end
    for ty in pairs(touched) do sync_type_signal(ty) end
    if ARGV[9] and ARGV[9] ~= '' then
        local woke = string.sub(ARGV[9], 2)
        if not touched[woke] then sync_type_signal(woke) end
    end
    if count then sync_list(K_WAKE, count) elseif every then sync_wake() end
    if K_BUDGET and #out > 0 then redis.call('INCRBY', K_BUDGET, #out / 5) end
    return { out, notes }

elseif cmd == 'renew' then
    -- ARGV[4] lease_until, ARGV[5..] pairs id, token. Returns 1/0 per pair.
    local lease_until = ARGV[4]
    local out = {}
    for i = 5, #ARGV, 2 do
        local id = ARGV[i]
        local key = JOB .. id
        if is_live(key, ARGV[i + 1]) then
            redis.call('HSET', key, 'lease_until', lease_until)
            redis.call('ZADD', K_LEASES, lease_until, id)
            out[#out + 1] = 1
        else
            out[#out + 1] = 0
        end
    end
    return out

elseif cmd == 'ack' then
    -- ARGV[4] ttl (s), ARGV[5] expires_at, ARGV[6..] pairs id, token. Returns 1/0 per pair.
    local ttl, expires_at = ARGV[4], ARGV[5]
    local out = {}
    for i = 6, #ARGV, 2 do
        local id = ARGV[i]
        local key = JOB .. id
        if is_live(key, ARGV[i + 1]) then
            redis.call('HSET', key, 'state', 'completed', 'updated_at', now, 'expires_at', expires_at)
            redis.call('HDEL', key, 'lease_until')
            redis.call('ZREM', K_LEASES, id)
            redis.call('EXPIRE', key, ttl)
            out[#out + 1] = 1
        else
            out[#out + 1] = 0
        end
    end
    return out

elseif cmd == 'retry' then
    -- ARGV[4] id, [5] token, [6] body, [7] at. Returns 1 or 0 (stale token).
    local id, body, at = ARGV[4], ARGV[6], ARGV[7]
    local key = JOB .. id
    if not is_live(key, ARGV[5]) then return 0 end
    redis.call('ZREM', K_LEASES, id)
    redis.call('HDEL', key, 'lease_until')
    if tonumber(at) > nnow then
        redis.call('HSET', key, 'state', 'scheduled', 'body', body, 'eta', at, 'updated_at', now,
            'seq', redis.call('INCR', K_SEQ))
        redis.call('ZADD', K_SCHED, at, id)
    else
        redis.call('HSET', key, 'state', 'ready', 'body', body, 'updated_at', now)
        push_ready({ id }, type_of_record(key) or '', false)
    end
    return 1

elseif cmd == 'dead' then
    -- ARGV[4] id, [5] token, [6] body, [7] reason, [8] ttl (s), [9] expires_at. Returns 1 or 0 (stale token).
    local id = ARGV[4]
    local key = JOB .. id
    if not is_live(key, ARGV[5]) then return 0 end
    redis.call('ZREM', K_LEASES, id)
    redis.call('HSET', key, 'body', ARGV[6])
    bury(key, id, ARGV[7], ARGV[8], ARGV[9])
    return 1

elseif cmd == 'release' then
    -- ARGV[4..] pairs id, token, judged in order. Live ones go back to the head, in the given order.
    local out, back, types = {}, {}, {}
    for i = 4, #ARGV, 2 do
        local id = ARGV[i]
        local key = JOB .. id
        if is_live(key, ARGV[i + 1]) then
            redis.call('HSET', key, 'state', 'ready', 'token', redis.call('INCR', K_SEQ), 'updated_at', now)
            redis.call('HDEL', key, 'lease_until')
            redis.call('ZREM', K_LEASES, id)
            back[#back + 1] = id
            types[#back] = type_of_record(key) or ''
            out[#out + 1] = 1
        else
            out[#out + 1] = 0
        end
    end
    push_ready(back, types, true)
    return out

elseif cmd == 'move_due' then
    -- ARGV[4] limit, ARGV[5] dead cutoff (now - dead_ttl). Returns {how many moved, eta of the earliest job still
    -- scheduled or '' when none}, so an idle scheduler knows when it next has work.
    expire_dead(ARGV[5])
    local due = ordered(K_SCHED, '-inf', now, tonumber(ARGV[4]), false)
    local ready, types = {}, {}
    for _, e in ipairs(due) do
        local id = e[1]
        local key = JOB .. id
        redis.call('ZREM', K_SCHED, id)
        local f = redis.call('HMGET', key, 'state', 'type')
        if f[1] == 'scheduled' then
            redis.call('HSET', key, 'state', 'ready', 'updated_at', now)
            redis.call('HDEL', key, 'eta')
            ready[#ready + 1] = id
            types[#ready] = f[2] or ''
        end
    end
    push_ready(ready, types, false)
    local nxt = redis.call('ZRANGE', K_SCHED, 0, 0, 'WITHSCORES')
    return { #ready, nxt[2] or '' }

elseif cmd == 'reap' then
    -- ARGV[4] max_crash_deliveries, [5] dead ttl (s), [6] dead expires_at, [7] limit. Returns {how many recovered,
    -- earliest lease expiry still in the queue or '' when none}, so a reaper knows when the queue next needs it.
    -- Also repairs the wake-up lists and the typed ready count, so a token lost with a crashed fetcher is restored
    -- by the next reap.
    local max_crashes = tonumber(ARGV[4])
    local ids = redis.call('ZRANGEBYSCORE', K_LEASES, '-inf', now, 'LIMIT', 0, tonumber(ARGV[7]))
    local expired = {}
    for _, id in ipairs(ids) do
        redis.call('ZREM', K_LEASES, id)
        local f = redis.call('HMGET', JOB .. id, 'state', 'crashes', 'token')
        if f[1] == 'running' then
            expired[#expired + 1] = { id, (tonumber(f[2]) or 0) + 1, tonumber(f[3]) or 0 }
        end
    end
    -- In hand-out order, so the recovered jobs end up at the head in the order they were fetched.
    table.sort(expired, function(a, b) return a[3] < b[3] end)
    local back, types = {}, {}
    for _, e in ipairs(expired) do
        local id, crashes = e[1], e[2]
        local key = JOB .. id
        redis.call('HSET', key, 'crashes', crashes, 'token', redis.call('INCR', K_SEQ))
        if crashes >= max_crashes then
            bury(key, id, 'crash_loop', ARGV[5], ARGV[6])
        else
            redis.call('HSET', key, 'state', 'ready', 'updated_at', now)
            redis.call('HDEL', key, 'lease_until')
            back[#back + 1] = id
            types[#back] = type_of_record(key) or ''
        end
    end
    push_ready(back, types, true)
    local total = 0
    for _, t in ipairs(redis.call('ZRANGE', K_TYPES, 0, -1)) do
        if not reindex(t) then redis.call('DEL', skey(t)) else sync_type_signal(t) end
        total = total + redis.call('ZCARD', rkey(t))
    end
    redis.call('SET', K_COUNT, total)
    sync_wake()
    sync_legacy()
    local nxt = redis.call('ZRANGE', K_LEASES, 0, 0, 'WITHSCORES')
    return { #expired, nxt[2] or '' }

elseif cmd == 'dead_list' then
    -- ARGV[4] limit, ARGV[5] dead cutoff. Returns id, body, reason, dead_at per letter, newest first.
    local out = {}
    for _, e in ipairs(ordered(K_DEAD, '(' .. ARGV[5], '+inf', tonumber(ARGV[4]), true)) do
        local f = redis.call('HMGET', JOB .. e[1], 'body', 'reason', 'dead_at')
        if f[1] or f[2] then -- a malformed record buried by take may have no body: listed with an empty one
            out[#out + 1] = e[1]
            out[#out + 1] = f[1] or ''
            out[#out + 1] = f[2] or ''
            out[#out + 1] = f[3] or tostring(e[2])
        end
    end
    return out

elseif cmd == 'requeue_dead' then
    -- ARGV[4] dead cutoff, ARGV[5..] ids (none = every dead letter, oldest first). Returns how many requeued.
    expire_dead(ARGV[4])
    local ids = {}
    if #ARGV < 5 then
        for _, e in ipairs(ordered(K_DEAD, '-inf', '+inf', redis.call('ZCARD', K_DEAD), false)) do
            ids[#ids + 1] = e[1]
        end
    else
        for i = 5, #ARGV do ids[#ids + 1] = ARGV[i] end
    end
    local ready, types = {}, {}
    for _, id in ipairs(ids) do
        local key = JOB .. id
        if redis.call('ZSCORE', K_DEAD, id) then
            local f = redis.call('HMGET', key, 'state', 'body')
            if f[2] then
                local t = type_of_record(key) or ''
                redis.call('ZREM', K_DEAD, id)
                redis.call('DEL', key)
                fresh(key, f[2], 'ready', t)
                ready[#ready + 1] = id
                types[#ready] = t
            elseif not f[1] then -- the record is gone
                redis.call('ZREM', K_DEAD, id)
            end -- else a letter without a body (a malformed record buried by take): nothing to run, it stays
        end
    end
    push_ready(ready, types, false)
    return #ready

elseif cmd == 'purge_dead' then
    -- ARGV[4] dead cutoff. Returns how many dead letters were dropped.
    expire_dead(ARGV[4])
    local ids = redis.call('ZRANGE', K_DEAD, 0, -1)
    for _, id in ipairs(ids) do
        local key = JOB .. id
        if redis.call('HGET', key, 'state') == 'dead' then redis.call('DEL', key) end
    end
    redis.call('DEL', K_DEAD)
    return #ids
end

return redis.error_reply('bananas-redis: unknown command ' .. tostring(cmd))
