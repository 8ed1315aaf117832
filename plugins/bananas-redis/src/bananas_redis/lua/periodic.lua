--[[
bananas-redis periodic jobs: the scheduler's leader lease, the per-tick guard and schedule state (the kernel's
``schedules`` capability, see bananas.broker_schedules). Every key shares the hash tag {<prefix>:periodic}.

Called as  EVALSHA <sha> 4 <leader> <seq> <ticks> <states> <command> <now> <args...>

  KEYS[1]  {<prefix>:periodic}:leader      HASH    holder, token, expires (Unix s, the broker's clock); a PEXPIRE
                                                   a minute past the lease only cleans it up
  KEYS[2]  {<prefix>:periodic}:leader-seq  STRING  counter: every new lease gets the next fencing token
  KEYS[3]  {<prefix>:periodic}:ticks       HASH    schedule -> newest tick claimed (Unix s)
  KEYS[4]  {<prefix>:periodic}:states      HASH    schedule -> state (JSON written by the kernel)

  acquire <candidate> <ttl>                    -> token, or false when another holds a live lease
  renew   <candidate> <token> <ttl>            -> 1 / 0
  release <candidate> <token>                  -> 1 / 0
  leader                                       -> {holder, token, expires} or false
  claim   <schedule> <tick> <token>            -> 1 when token is the live lease's and tick is newer than the last
  unclaim <schedule> <tick> <previous|''> <token> -> 1 / 0
  save    <schedule> <state> <token>           -> 1 / 0
]]

local command, now = ARGV[1], tonumber(ARGV[2])

local function live()
    local holder, token, expires = unpack(redis.call('HMGET', KEYS[1], 'holder', 'token', 'expires'))
    if holder and tonumber(expires) > now then
        return holder, tonumber(token)
    end
    return nil, nil
end

local function keep(ttl)
    redis.call('HSET', KEYS[1], 'expires', tostring(now + ttl))
    redis.call('PEXPIRE', KEYS[1], math.ceil((ttl + 60) * 1000))
end

local function fenced(token)
    local _, live_token = live()
    return live_token ~= nil and live_token == tonumber(token)
end

if command == 'acquire' then
    local candidate, ttl = ARGV[3], tonumber(ARGV[4])
    local holder, token = live()
    if holder and holder ~= candidate then
        return false
    end
    if not holder then
        token = redis.call('INCR', KEYS[2])
        redis.call('DEL', KEYS[1])
        redis.call('HSET', KEYS[1], 'holder', candidate, 'token', token)
    end
    keep(ttl)
    return token
elseif command == 'renew' or command == 'release' then
    local holder, token = live()
    if holder ~= ARGV[3] or token ~= tonumber(ARGV[4]) then
        return 0
    end
    if command == 'renew' then
        keep(tonumber(ARGV[5]))
    else
        redis.call('DEL', KEYS[1])
    end
    return 1
elseif command == 'leader' then
    local holder, token = live()
    if not holder then
        return false
    end
    return {holder, token, redis.call('HGET', KEYS[1], 'expires')}
elseif command == 'claim' then
    local schedule, tick = ARGV[3], tonumber(ARGV[4])
    if not fenced(ARGV[5]) then
        return 0
    end
    local last = redis.call('HGET', KEYS[3], schedule)
    if last and tonumber(last) >= tick then
        return 0
    end
    redis.call('HSET', KEYS[3], schedule, ARGV[4])
    return 1
elseif command == 'unclaim' then
    local schedule = ARGV[3]
    if not fenced(ARGV[6]) or tonumber(redis.call('HGET', KEYS[3], schedule)) ~= tonumber(ARGV[4]) then
        return 0
    end
    if ARGV[5] == '' then
        redis.call('HDEL', KEYS[3], schedule)
    else
        redis.call('HSET', KEYS[3], schedule, ARGV[5])
    end
    return 1
elseif command == 'save' then
    if not fenced(ARGV[5]) then
        return 0
    end
    redis.call('HSET', KEYS[4], ARGV[3], ARGV[4])
    return 1
end
return redis.error_reply('periodic.lua: unknown command ' .. tostring(command))
