-- Rolling keyword counts: one zset per minute; the top of each minute in the window,
-- summed here so one call serves the staff metrics.
-- KEYS: the minute zsets of the window   ARGV: n per minute
-- Returns JSON {"word": count, ...}
local n = tonumber(ARGV[1])
if n <= 0 then return '{}' end  -- ZREVRANGE 0 -1 would be everything
local sums = {}
for _, key in ipairs(KEYS) do
  local top = redis.call('ZREVRANGE', key, 0, n - 1, 'WITHSCORES')
  for i = 1, #top, 2 do sums[top[i]] = (sums[top[i]] or 0) + tonumber(top[i + 1]) end
end
if next(sums) == nil then return '{}' end
return cjson.encode(sums)
