--[[
bananas-redis job control (the broker capability 'cancellation', bananas_redis/control.py): cancel a job, and end a
running one in state cancelled or expired. Works on the job record hash of one queue (see dispatch.lua's header for
its fields); it adds one field:
  cancel       set (to the time of the request) while a running job has a cancel request; its worker sees it
               through cancel_requested (a plain HMGET from Python) and ends the job with 'finish'

Called as  EVALSHA <sha> 5 <ready> <scheduled> <leases> <signal> <job-key>  <command> <now> ...

Keys (all of one queue, under the same hash tag {<prefix>:<queue>}, so one call touches one cluster slot):
  KEYS[1] {p:q}:ready  KEYS[2] {p:q}:scheduled  KEYS[3] {p:q}:leases  KEYS[4] {p:q}:signal  KEYS[5] {p:q}:job:<id>

A cancelled or expired record is terminal like a completed one: it carries an EXPIRE (completed_ttl) and an
expires_at, dispatch.lua's take drops a stale ready entry of it, move_due skips it, enqueue replaces it.
]]

local K_READY, K_SCHED, K_LEASES, K_SIGNAL, KEY = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local cmd, now = ARGV[1], ARGV[2]

local function ended(state, ttl, expires_at)
    redis.call('HSET', KEY, 'state', state, 'updated_at', now, 'expires_at', expires_at)
    redis.call('HDEL', KEY, 'eta', 'lease_until', 'cancel')
    redis.call('EXPIRE', KEY, ttl)
end

if cmd == 'cancel' then
    -- ARGV[3] id, [4] ttl (s), [5] expires_at. Returns the state before ('' when there is no record).
    local id = ARGV[3]
    local state = redis.call('HGET', KEY, 'state')
    if not state then return '' end
    if state == 'ready' then
        redis.call('LREM', K_READY, 0, id)
        -- keep the wake-up list no longer than the ready list (dispatch.lua's sync_signal invariant)
        local ready = redis.call('LLEN', K_READY)
        if ready == 0 then redis.call('DEL', K_SIGNAL) else redis.call('LTRIM', K_SIGNAL, 0, ready - 1) end
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
