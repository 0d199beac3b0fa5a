-- unregister_node.lua: forget a node that stopped cleanly.
--
-- KEYS[1]  P:nodes      zset  node -> last heartbeat (server time)
-- KEYS[2]  P:nodeinfo   hash  node -> JSON info
--
-- ARGV[1]  the node id
--
-- A node hands its jobs back before it unregisters. If it did not, its claim set
-- (P:claims:<node>) stays listed in P:claimers, and the next take_over moves those jobs
-- back as jobs of a node that no longer exists. Returns 1 if the node was registered.

redis.call('HDEL', KEYS[2], ARGV[1])
return redis.call('ZREM', KEYS[1], ARGV[1])
