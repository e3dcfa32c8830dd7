-- Reads one order of a sale (the engine's copy is the live truth; SQL follows the log).
-- KEYS: sale, holds, orders, log   ARGV: order_id
return redis.call('HGET', KEYS[3], ARGV[1])
