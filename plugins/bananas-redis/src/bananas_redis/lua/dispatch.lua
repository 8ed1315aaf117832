--[[
bananas-redis dispatcher: every state transition of one queue, atomically. Redis 6.2+ (uses LPOP with a count).

Called as  EVALSHA <sha> 6 <ready> <scheduled> <leases> <dead> <seq> <signal>  <command> <job-prefix> <now> ...

Keys (all of one queue, all under the same hash tag {<prefix>:<queue>}, so one call touches one cluster slot):

  KEYS[1] {p:q}:ready      LIST    ids ready to run; head = next out. enqueue/retry/move_due RPUSH, release and
                                   crash recovery LPUSH to the head, take LRANGEs the head, checks every entry,
                                   then LPOPs exactly the entries it examined (see "Malformed entries").
  KEYS[2] {p:q}:scheduled  ZSET    id -> eta; delayed jobs and retries. move_due moves due ones to ready.
  KEYS[3] {p:q}:leases     ZSET    id -> lease expiry of every running job. renew rescores, reap recovers.
  KEYS[4] {p:q}:dead       ZSET    id -> dead_at; the dead letters of the queue.
  KEYS[5] {p:q}:seq        STRING  counter: fencing tokens and the sequence numbers that order ties.
  KEYS[6] {p:q}:signal     LIST    wake-up tokens for fetchers blocked in BLPOP. After every call of this script
                                   min(len(ready), 16) <= len(signal) <= len(ready) (see sync_signal).
  ARGV[2] .. <id>          HASH    {p:q}:job:<id>, the job record (the key is built here from ARGV[2], which the
                                   client derives from the same hash tag, so it lives on the same slot):
                                     state        ready | scheduled | running | completed | dead, or
                                                  cancelled | expired (set by lua/control.lua)
                                     body         the encoded job as last stored
                                     deliveries   hand-outs so far;  crashes  hand-outs that ended in an expired lease
                                     token        fencing token of the live hand-out (absent before the first)
                                     lease_until  while running;  eta  while scheduled
                                     seq          orders jobs of equal eta / dead_at (from KEYS[5])
                                     reason, dead_at   when dead
                                     updated_at   last transition;  expires_at  retention deadline (client clock)
                                     started_at   when the last hand-out began (kept by ack: a completed job's start)
                                   completed and dead records also carry a Redis EXPIRE (completed_ttl / dead_ttl).

Malformed entries. take never fails half-way: it examines every entry of a batch (HMGET, and TYPE where that fails) before it pops
or writes anything, and only writes keys whose type it checked. An entry of the ready list whose record is
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

-- Keep the wake-up list between min(ready, SIGNAL_CAP) and ready long: a blocked fetcher wakes iff work exists,
-- a woken fetcher that takes part of a long queue passes the baton on, and an empty queue leaves no stale token.
local function sync_signal()
    local ready = redis.call('LLEN', K_READY)
    if ready == 0 then
        redis.call('DEL', K_SIGNAL)
        return
    end
    local have = redis.call('LLEN', K_SIGNAL)
    local want = math.min(ready, SIGNAL_CAP)
    if have < want then
        local ones = {}
        for i = 1, want - have do ones[i] = '1' end
        redis.call('RPUSH', K_SIGNAL, unpack(ones))
    elseif have > ready then
        redis.call('LTRIM', K_SIGNAL, 0, ready - 1)
    end
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
local function fresh(key, body, state)
    redis.call('HSET', key, 'state', state, 'body', body, 'updated_at', now)
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

if cmd == 'enqueue' then
    -- ARGV[4..]: triples id, body, eta ('' = now). Returns 1 (stored) or 0 (a live copy exists) per triple.
    local out, ready = {}, {}
    for i = 4, #ARGV, 3 do
        local id, body, eta = ARGV[i], ARGV[i + 1], ARGV[i + 2]
        local key = JOB .. id
        local st = redis.call('HGET', key, 'state')
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
                fresh(key, body, 'scheduled')
                redis.call('HSET', key, 'eta', eta, 'seq', redis.call('INCR', K_SEQ))
                redis.call('ZADD', K_SCHED, eta, id)
            else
                fresh(key, body, 'ready')
                ready[#ready + 1] = id
            end
        end
    end
    if #ready > 0 then
        push_many('RPUSH', K_READY, ready)
        sync_signal()
    end
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
            if f[1] == 'ready' then redis.call('LREM', K_READY, -1, id) else redis.call('ZREM', K_SCHED, id) end
            redis.call('DEL', key)
            out[#out + 1] = 1
        else
            out[#out + 1] = 0
        end
    end
    sync_signal()
    return out

elseif cmd == 'take' then
    -- ARGV[4] lease_until, [5] limit, [6] dead ttl (s), [7] dead expires_at. Returns {hand-outs, notes}:
    -- hand-outs are id, body, token, deliveries, crashes per leased job; notes are id, what per ready entry that was
    -- not handed out (see the header: malformed records are dead-lettered, stale entries dropped).
    -- Every entry is examined (LRANGE, HMGET; TYPE only where that is not a ready hash with a body) before anything
    -- is popped or written, and every write below works on a key whose type was checked, so the script cannot fail
    -- half-way and lose popped ids.
    local lease_until, dead_ttl, dead_expires = ARGV[4], ARGV[6], ARGV[7]
    local want = tonumber(ARGV[5])
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
    local seen = {}
    while want > 0 do
        local ids = redis.call('LRANGE', K_READY, 0, want - 1)
        if #ids == 0 then break end
        local plan, ready = {}, 0
        for j, id in ipairs(ids) do
            local key = JOB .. id
            local p = { id = id, key = key }
            -- The common case costs one HMGET; pcall, because HMGET on a key of another type is an error reply.
            local f = (not seen[id]) and redis.pcall('HMGET', key, 'state', 'body', 'deliveries', 'crashes')
            if seen[id] then
                p.act, p.what = 'drop', 'dropped from the ready list: a duplicate entry'
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
            seen[id] = true
            plan[j] = p
        end
        -- INCRBY first: a counter that is not an integer fails here, before anything was popped.
        local base = redis.call('INCRBY', K_SEQ, ready) - ready
        redis.call('LPOP', K_READY, #ids)
        for _, p in ipairs(plan) do
            if p.act == 'run' then
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
                    fresh(p.key, p.body, 'ready')
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
    sync_signal()
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
        redis.call('RPUSH', K_READY, id)
        sync_signal()
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
    local out, back = {}, {}
    for i = 4, #ARGV, 2 do
        local id = ARGV[i]
        local key = JOB .. id
        if is_live(key, ARGV[i + 1]) then
            redis.call('HSET', key, 'state', 'ready', 'token', redis.call('INCR', K_SEQ), 'updated_at', now)
            redis.call('HDEL', key, 'lease_until')
            redis.call('ZREM', K_LEASES, id)
            back[#back + 1] = id
            out[#out + 1] = 1
        else
            out[#out + 1] = 0
        end
    end
    for i = #back, 1, -1 do redis.call('LPUSH', K_READY, back[i]) end
    if #back > 0 then sync_signal() end
    return out

elseif cmd == 'move_due' then
    -- ARGV[4] limit, ARGV[5] dead cutoff (now - dead_ttl). Returns {how many moved, eta of the earliest job still
    -- scheduled or '' when none}, so an idle scheduler knows when it next has work.
    expire_dead(ARGV[5])
    local due = ordered(K_SCHED, '-inf', now, tonumber(ARGV[4]), false)
    local ready = {}
    for _, e in ipairs(due) do
        local id = e[1]
        local key = JOB .. id
        redis.call('ZREM', K_SCHED, id)
        if redis.call('HGET', key, 'state') == 'scheduled' then
            redis.call('HSET', key, 'state', 'ready', 'updated_at', now)
            redis.call('HDEL', key, 'eta')
            ready[#ready + 1] = id
        end
    end
    if #ready > 0 then
        push_many('RPUSH', K_READY, ready)
        sync_signal()
    end
    local nxt = redis.call('ZRANGE', K_SCHED, 0, 0, 'WITHSCORES')
    return { #ready, nxt[2] or '' }

elseif cmd == 'reap' then
    -- ARGV[4] max_crash_deliveries, [5] dead ttl (s), [6] dead expires_at, [7] limit. Returns {how many recovered,
    -- earliest lease expiry still in the queue or '' when none}, so a reaper knows when the queue next needs it.
    -- Also repairs the wake-up list, so a token lost with a crashed fetcher is restored by the next reap.
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
    -- Latest hand-out first, so the recovered jobs end up at the head in the order they were fetched.
    table.sort(expired, function(a, b) return a[3] > b[3] end)
    for _, e in ipairs(expired) do
        local id, crashes = e[1], e[2]
        local key = JOB .. id
        redis.call('HSET', key, 'crashes', crashes, 'token', redis.call('INCR', K_SEQ))
        if crashes >= max_crashes then
            bury(key, id, 'crash_loop', ARGV[5], ARGV[6])
        else
            redis.call('HSET', key, 'state', 'ready', 'updated_at', now)
            redis.call('HDEL', key, 'lease_until')
            redis.call('LPUSH', K_READY, id)
        end
    end
    sync_signal()
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
    local ready = {}
    for _, id in ipairs(ids) do
        local key = JOB .. id
        if redis.call('ZSCORE', K_DEAD, id) then
            local f = redis.call('HMGET', key, 'state', 'body')
            if f[2] then
                redis.call('ZREM', K_DEAD, id)
                redis.call('DEL', key)
                fresh(key, f[2], 'ready')
                ready[#ready + 1] = id
            elseif not f[1] then -- the record is gone
                redis.call('ZREM', K_DEAD, id)
            end -- else a letter without a body (a malformed record buried by take): nothing to run, it stays
        end
    end
    if #ready > 0 then
        push_many('RPUSH', K_READY, ready)
        sync_signal()
    end
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
