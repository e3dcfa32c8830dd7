-- One round trip for what follows a published comment batch: the recent list (join
-- snapshots), the durable log (SQL, off the hot path) and this minute's keyword counts.
-- KEYS: recent (list, newest first), log stream, keywords zset of this minute
-- ARGV: recent_cap, keyword_ttl_ms, log_json, n_items, item_json * n, (token, count) * m
local cap = tonumber(ARGV[1])
local n = tonumber(ARGV[4])
if cap > 0 and n > 0 then
  for i = 5, 4 + n do redis.call('LPUSH', KEYS[1], ARGV[i]) end
  redis.call('LTRIM', KEYS[1], 0, cap - 1)
end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', 100000, '*', 'c', ARGV[3])
local first = 5 + n
if first < #ARGV then
  for i = first, #ARGV - 1, 2 do redis.call('ZINCRBY', KEYS[3], ARGV[i + 1], ARGV[i]) end
  redis.call('PEXPIRE', KEYS[3], ARGV[2])
end
return '1'
