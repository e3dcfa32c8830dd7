-- Race closed: seq assignment, history append/trim and fan-out happening apart. Two
-- publishers could otherwise PUBLISH out of seq order, or a reader could see a trimmed
-- history without the advanced floor and replay a gap as if it were complete.
-- KEYS: seq, hist, hist_floor
-- ARGV: event, json, durable ("1"/"0"), history_size, channel, publish command ("PUBLISH";
--   "SPUBLISH" on a Redis Cluster: the channel shares the room's hash tag, so the message
--   stays in the shard that runs this script)
local seq = redis.call('INCR', KEYS[1])
local envelope = seq .. '\n' .. ARGV[1] .. '\n' .. ARGV[2]
if ARGV[3] == '1' then
  redis.call('RPUSH', KEYS[2], envelope)
  local excess = redis.call('LLEN', KEYS[2]) - tonumber(ARGV[4])
  if excess > 0 then
    local popped = redis.call('LPOP', KEYS[2], excess)
    local newest_trimmed = tonumber(string.match(popped[#popped], '^(%d+)'))
    redis.call('SET', KEYS[3], tostring(newest_trimmed + 1))
  end
end
redis.call(ARGV[6], ARGV[5], envelope)
return seq
