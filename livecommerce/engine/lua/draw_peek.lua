-- KEYS: entrants (set)   ARGV: user_id ("" for none)
-- Returns JSON {"count": n, "entered": bool}
local entered = ARGV[1] ~= '' and redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 1
return cjson.encode({count = redis.call('SCARD', KEYS[1]), entered = entered})
