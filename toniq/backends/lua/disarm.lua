-- disarm.lua: a node stops waiting for jobs handed over (its wait was cut short, or it is
-- stopping); the jobs handed to it that it never took go back to AVAILABLE.
--
-- KEYS[1]  P:armed             hash  node -> "<token> <until>", "<node>#slots" (see claim.lua)
-- KEYS[2]  P:handoff:<node>    list  the jobs enqueue.lua handed this node
-- KEYS[3]  P:jobs              hash  id -> record (JSON)
-- KEYS[4]  P:claimers          set   of nodes whose claim set is not empty
-- KEYS[5]  P:count:running     hash  worker -> RUNNING jobs
-- KEYS[6]  P:claims:<node>     hash  id -> worker, the jobs this node holds
-- KEYS[6 + 2i - 1]  P:available:<worker i>  zset id -> node_deaths * 2^44 + seq
-- KEYS[6 + 2i]      P:waiting:<worker i>    zset node -> time armed
--
-- ARGV[1]           the node id
-- ARGV[2 .. m + 1]  the node's workers, in the order of their KEYS
--
-- After this no enqueue hands the node a job (until a claim arms it again). A job on
-- P:handoff:<node> still RUNNING under this node and the token it was handed with, of a
-- worker named here, is given back as hand_back.lua does (attempt given back, its own place
-- in its worker's FIFO); wake-up markers and stale entries are dropped. Returns how many
-- jobs were given back.

local node = ARGV[1]
local m = #ARGV - 1
local queues = worker_keys(2, m, 6, 2)
redis.call('HDEL', KEYS[1], node, node .. '#slots')
for i = 1, m do
  redis.call('ZREM', KEYS[6 + 2 * i], node)
end
local handed = take_handed(KEYS[2], KEYS[3], node)
if #handed == 0 then
  return 0
end
local released = 0
for _, h in ipairs(handed) do
  local id, job = h[1], h[2]
  if queues[job.worker] then
    give_back(KEYS[3], KEYS[6], KEYS[5], KEYS[queues[job.worker]], id, job)
    released = released + 1
  end
end
forget_empty_claims(KEYS[4], KEYS[6], node)
return released
