-- register_node.lua: record a node as alive from the server's now.
--
-- KEYS[1]  P:nodes      zset  node -> last heartbeat (server time)
-- KEYS[2]  P:nodeinfo   hash  node -> JSON {host, pid, started_at, workers}
--
-- ARGV[1]  the node id
-- ARGV[2]  the node's info (JSON text)
--
-- Returns the heartbeat time (server clock) as text.

local t = fmt(now())
redis.call('ZADD', KEYS[1], t, ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
return t
