-- Reads one member order (the engine's copy is the live truth; SQL follows the log).
-- KEYS: campaign, groups, open, orders, log   ARGV: order_id
return redis.call('HGET', KEYS[4], ARGV[1])
