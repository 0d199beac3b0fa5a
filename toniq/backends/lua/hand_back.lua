-- hand_back.lua: give a node's claims back as AVAILABLE at once (graceful shutdown).
--
-- KEYS[1]  P:jobs              hash  id -> record (JSON)
-- KEYS[2]  P:claimers          set   of nodes whose claim set is not empty
-- KEYS[3]  P:count:running     hash  worker -> RUNNING jobs
-- KEYS[4]  P:claims:<node>     hash  id -> worker, the jobs this node holds
-- KEYS[4 + i]  P:available:<worker i>  zset id -> seq
--
-- ARGV[1]           the node id
-- ARGV[2]           m, the number of workers (i = 1 .. m)
-- ARGV[3 .. m + 2]  the worker names, in the order of their KEYS
-- then 2 per job:   id, token
--
-- Two phases: the client first reads the workers of the ids from P:claims:<node> (HMGET)
-- to name their queues in KEYS. This script checks each job again: it must still be
-- RUNNING under that token, held by this node, of a worker named in KEYS; anything else
-- is skipped. A handed-back job gets its attempt back and returns to its own place in its
-- worker's FIFO (score = its seq), so it is claimed before the jobs enqueued after it.
-- Returns how many jobs were handed back.

local node, m = ARGV[1], tonumber(ARGV[2])
local queues = worker_keys(3, m, 4, 1)
local released = 0
for a = m + 3, #ARGV, 2 do
  local id, token = ARGV[a], ARGV[a + 1]
  local job = load_job(KEYS[1], id)
  if job and job.state == 'running' and job.token == token and job.node == node
      and queues[job.worker] then
    give_back(KEYS[1], KEYS[4], KEYS[3], KEYS[queues[job.worker]], id, job)
    released = released + 1
  end
end
forget_empty_claims(KEYS[2], KEYS[4], node)
return released
