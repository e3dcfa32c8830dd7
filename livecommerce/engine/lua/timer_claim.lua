-- Race closed: two nodes polling at once and both firing the same due timer. Finding due
-- timers and leasing them (due := now + lease, fresh token) is one step, so each due timer
-- goes to exactly one claimer; a lapsed lease makes it due again for anyone.
-- KEYS: due (zset), payload (hash), token (hash)   ARGV: now_ms, lease_ms, limit, token_prefix
-- Returns name, payload, token triples.
local names = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[3])
local lease_until = string.format('%d', tonumber(ARGV[1]) + tonumber(ARGV[2]))
local out = {}
for i, name in ipairs(names) do
  local payload = redis.call('HGET', KEYS[2], name)
  if payload then
    local token = ARGV[4] .. i
    redis.call('ZADD', KEYS[1], lease_until, name)
    redis.call('HSET', KEYS[3], name, token)
    out[#out + 1] = name
    out[#out + 1] = payload
    out[#out + 1] = token
  else
    -- cannot happen through timer_add; drop the orphan instead of claiming it forever
    redis.call('ZREM', KEYS[1], name)
    redis.call('HDEL', KEYS[3], name)
  end
end
return out
