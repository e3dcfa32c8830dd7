-- Race closed: a draw timer fired twice (a lease overrun) drawing from two different
-- lists. The first close freezes the eligible entrants (entered, and still in the room);
-- every later close returns that same list.
-- KEYS: state, entrants, here, names, final (list), current
-- ARGV: now, draw_id
-- Returns JSON {"eligible":[ids],"names":{id:name},"entered":n} | {"error":"not_found"}
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return '{"error":"not_found"}' end
if status == 'open' then
  local now = tonumber(ARGV[1])
  for _, user in ipairs(redis.call('SMEMBERS', KEYS[2])) do
    local until_ms = tonumber(redis.call('ZSCORE', KEYS[3], user) or '0')
    if until_ms >= now then redis.call('RPUSH', KEYS[5], user) end
  end
  redis.call('HSET', KEYS[1], 'status', 'closed', 'entered', redis.call('SCARD', KEYS[2]))
  redis.call('PEXPIRE', KEYS[5], 3600000)
  if redis.call('GET', KEYS[6]) == ARGV[2] then redis.call('DEL', KEYS[6]) end
end
local eligible = redis.call('LRANGE', KEYS[5], 0, -1)
local names = {}
for _, user in ipairs(eligible) do names[user] = redis.call('HGET', KEYS[4], user) or '' end
local out = {eligible = eligible, names = names,
  entered = tonumber(redis.call('HGET', KEYS[1], 'entered'))}
if #eligible == 0 then return '{"eligible":[],"names":{},"entered":' .. out.entered .. '}' end
return cjson.encode(out)
