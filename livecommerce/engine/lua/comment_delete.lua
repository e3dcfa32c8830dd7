-- Race closed: a deletion reaching SQL before the comment it deletes. Both go through the
-- same per-room log, in order; the recent list drops it at the same time.
-- KEYS: recent, log stream   ARGV: comment_id, log_json
-- Returns 1 if the comment was still in the recent list.
local items = redis.call('LRANGE', KEYS[1], 0, -1)
local found = 0
for _, raw in ipairs(items) do
  if cjson.decode(raw).id == ARGV[1] then
    redis.call('LREM', KEYS[1], 0, raw)
    found = 1
  end
end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', 100000, '*', 'c', ARGV[2])
return tostring(found)
