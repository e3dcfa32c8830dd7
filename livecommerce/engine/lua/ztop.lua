-- Race closed: a score changing between finding the n-th score and reading the ties at it.
-- Also fixes the order of ties: ZREVRANGE breaks them by member descending, the contract
-- wants ascending, so the ties at the cut-off are read with ZRANGEBYSCORE (ascending).
-- KEYS: zset   ARGV: n   Returns member, score pairs (unordered; the caller sorts).
local n = tonumber(ARGV[1])
if n <= 0 then
  return {}
end
local edge = redis.call('ZREVRANGE', KEYS[1], n - 1, n - 1, 'WITHSCORES')
if #edge == 0 then
  return redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
end
local out = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. edge[2], '+inf', 'WITHSCORES')
local ties = redis.call('ZRANGEBYSCORE', KEYS[1], edge[2], edge[2], 'WITHSCORES',
  'LIMIT', 0, n - #out / 2)
for _, v in ipairs(ties) do
  out[#out + 1] = v
end
return out
