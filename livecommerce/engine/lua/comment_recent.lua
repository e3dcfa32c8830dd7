-- KEYS: recent (newest first)   ARGV: n   Returns a JSON array, oldest first.
local items = redis.call('LRANGE', KEYS[1], 0, tonumber(ARGV[1]) - 1)
local out = {}
for i = #items, 1, -1 do out[#out + 1] = items[i] end
return '[' .. table.concat(out, ',') .. ']'
