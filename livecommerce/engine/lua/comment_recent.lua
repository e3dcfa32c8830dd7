-- KEYS: recent (newest first)   ARGV: n   Returns a JSON array, oldest first.
local n = tonumber(ARGV[1])
if n <= 0 then return '[]' end  -- LRANGE 0 -1 would be everything
local items = redis.call('LRANGE', KEYS[1], 0, n - 1)
local out = {}
for i = #items, 1, -1 do out[#out + 1] = items[i] end
return '[' .. table.concat(out, ',') .. ']'
