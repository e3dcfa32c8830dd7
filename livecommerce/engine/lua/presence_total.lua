-- Race closed: pruning dead nodes and summing the rest in separate steps could count a node
-- another caller is pruning, or skip one that just reported. One snapshot, server clock.
-- KEYS: counts (hash node -> n), expiry (zset node -> ms)
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local dead = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now)
for _, node in ipairs(dead) do
  redis.call('HDEL', KEYS[1], node)
end
if #dead > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
end
local total = 0
for _, n in ipairs(redis.call('HVALS', KEYS[1])) do
  total = total + tonumber(n)
end
return total
