-- Reads a sale's terms, stock and status together, so the three are of one instant.
-- KEYS: sale
local s = redis.call('HMGET', KEYS[1], 'terms', 'left', 'status')
if not s[1] then return nil end
return '{"terms":' .. s[1] .. ',"left":' .. s[2] .. ',"status":"' .. s[3] .. '"}'
