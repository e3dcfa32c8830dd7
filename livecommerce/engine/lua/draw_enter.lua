-- Race closed: an entry accepted after the draw took its list of entrants (it would be
-- told "entered" and never be drawn). Entering and closing are both atomic on the state.
-- KEYS: state (hash status, ends_at), entrants (set), names (hash user -> name)
-- ARGV: user_id, name, now
-- Returns JSON {"new":bool,"count":n} | {"error":"ended"|"not_found"}
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return '{"error":"not_found"}' end
if status ~= 'open' or tonumber(ARGV[3]) >= tonumber(redis.call('HGET', KEYS[1], 'ends_at')) then
  return '{"error":"ended"}'
end
local new = redis.call('SADD', KEYS[2], ARGV[1])
if new == 1 then redis.call('HSET', KEYS[3], ARGV[1], ARGV[2]) end
return cjson.encode({new = new == 1, count = redis.call('SCARD', KEYS[2])})
