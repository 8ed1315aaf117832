--[[
bananas-redis home keys: which queue holds (or last held) a job id, so "one live copy per id" holds across queues.

Called as  EVALSHA <sha> N <home key>... <mode> <queue> <ttl> <queue> <ttl> ...

  KEYS[i]  {<prefix>:home:<b>}:<id>  STRING  the id's home queue, with an EXPIRE. Ids are spread over a fixed
                                             number of buckets <b> (crc32(id) mod 16); one call touches the keys
                                             of one bucket only, so all its keys share one hash tag.
  mode     'claim'  SET NX EX: returns '' where the claim succeeded, else the current home queue
           'set'    SET EX (the id moved): returns '' for each key
]]

local mode = ARGV[1]
local out = {}
for i, key in ipairs(KEYS) do
    local queue, ttl = ARGV[2 * i], ARGV[2 * i + 1]
    if mode == 'set' then
        redis.call('SET', key, queue, 'EX', ttl)
        out[i] = ''
    elseif redis.call('SET', key, queue, 'NX', 'EX', ttl) then
        out[i] = ''
    else
        out[i] = redis.call('GET', key) or ''
    end
end
return out
