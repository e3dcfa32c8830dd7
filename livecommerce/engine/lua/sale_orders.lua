-- Every order of a sale as the engine holds it (start-up reconciliation with SQL).
-- KEYS: sale, holds, orders, log
local all = redis.call('HVALS', KEYS[3])
return '[' .. table.concat(all, ',') .. ']'
