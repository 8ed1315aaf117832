--[[
bananas-redis job control (the broker capability 'cancellation', bananas_redis/control.py): cancel a job, and end a
running one in state cancelled or expired. Works on the job record hash of one queue (see dispatch.lua's header for
its fields); it adds one field:
  cancel       set (to the time of the request) while a running job has a cancel request; its worker sees it
               through cancel_requested (a plain HMGET from Python) and ends the job with 'finish'

Called as  EVALSHA <sha> 8 <ready> <scheduled> <leases> <signal> <job-key> <types> <count> <wake>  <command> <now> ...

Keys (all of one queue, under the same hash tag {<prefix>:<queue>}, so one call touches one cluster slot):
  KEYS[1] {p:q}:ready  KEYS[2] {p:q}:scheduled  KEYS[3] {p:q}:leases  KEYS[4] {p:q}:signal  KEYS[5] {p:q}:job:<id>
  KEYS[6] {p:q}:types  KEYS[7] {p:q}:count  KEYS[8] {p:q}:wake  (and KEYS[1]/KEYS[4] .. ':' .. <type>, a type's
  ready ZSET and wake-up list: see dispatch.lua's header)

A cancelled or expired record is terminal like a completed one: it carries an EXPIRE (completed_ttl) and an
expires_at, dispatch.lua's take drops a stale ready entry of it, move_due skips it, enqueue replaces it.
]]

local K_READY, K_SCHED, K_LEASES, K_SIGNAL, KEY = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local K_TYPES, K_COUNT, K_WAKE = KEYS[6], KEYS[7], KEYS[8]
local cmd, now = ARGV[1], ARGV[2]

-- A wake-up list no longer than the n ready jobs it stands for (dispatch.lua's sync_list, for a removal: one job
-- fewer can only make the list too long, never too short).
local function trim(sig, n)
    if n <= 0 then redis.call('DEL', sig) elseif redis.call('LLEN', sig) > n then redis.call('LTRIM', sig, 0, n - 1) end
end

-- Take a ready id out of its type's ZSET (a 0.2 record), keeping the index of type heads, the typed ready count and
-- the wake-up lists as dispatch.lua keeps them; false when it is not there (a 0.1 record, or one a 0.1 process
-- made ready: then it is in the 0.1 list).
local function unready_typed(id, t)
    local rk = K_READY .. ':' .. t
    if redis.call('ZREM', rk, id) == 0 then return false end
    local count = redis.call('INCRBY', K_COUNT, -1)
    local head = redis.call('ZRANGE', rk, 0, 0, 'WITHSCORES')
    if #head == 0 then redis.call('ZREM', K_TYPES, t) else redis.call('ZADD', K_TYPES, head[2], t) end
    trim(K_SIGNAL .. ':' .. t, #head == 0 and 0 or redis.call('ZCARD', rk))
    trim(K_WAKE, count)
    return true
end

local function ended(state, ttl, expires_at)
    redis.call('HSET', KEY, 'state', state, 'updated_at', now, 'expires_at', expires_at)
    redis.call('HDEL', KEY, 'eta', 'lease_until', 'cancel')
    redis.call('EXPIRE', KEY, ttl)
end

if cmd == 'cancel' then
    -- ARGV[3] id, [4] ttl (s), [5] expires_at. Returns the state before ('' when there is no record).
    local id = ARGV[3]
    local f = redis.call('HMGET', KEY, 'state', 'type')
    local state = f[1]
    if not state then return '' end
    if state == 'ready' then
        if not (f[2] and unready_typed(id, f[2])) then
            redis.call('LREM', K_READY, 0, id)
            trim(K_SIGNAL, redis.call('LLEN', K_READY))
        end
        ended('cancelled', ARGV[4], ARGV[5])
    elseif state == 'scheduled' then
        redis.call('ZREM', K_SCHED, id)
        ended('cancelled', ARGV[4], ARGV[5])
    elseif state == 'running' then
        redis.call('HSET', KEY, 'cancel', now)
    end
    return state

elseif cmd == 'finish' then
    -- ARGV[3] id, [4] token (per-queue part), [5] body, [6] state (cancelled | expired), [7] ttl, [8] expires_at.
    -- Returns 1, or 0 when the token is stale.
    local f = redis.call('HMGET', KEY, 'state', 'token')
    if f[1] ~= 'running' or f[2] ~= ARGV[4] then return 0 end
    redis.call('ZREM', K_LEASES, ARGV[3])
    redis.call('HSET', KEY, 'body', ARGV[5])
    ended(ARGV[6], ARGV[7], ARGV[8])
    return 1
end

return redis.error_reply('bananas-redis: unknown control command ' .. tostring(cmd))
