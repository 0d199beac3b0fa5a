-- take_over.lua: move the jobs of dead nodes (and of nodes no longer registered) back to
-- AVAILABLE, or to FAILED once a job has lost max_node_deaths nodes.
--
-- KEYS[1]  P:nodes             zset  node -> last heartbeat (server time)
-- KEYS[2]  P:nodeinfo          hash  node -> JSON info
-- KEYS[3]  P:jobs              hash  id -> record (JSON)
-- KEYS[4]  P:errors            hash  id -> JSON list of errors
-- KEYS[5]  P:failed            zset  member(seq, id) -> finished_at
-- KEYS[6]  P:claimers          set   of nodes whose claim set is not empty
-- KEYS[7]  P:count:running     hash  worker -> RUNNING jobs
-- KEYS[8]  P:count:failed      hash  worker -> FAILED jobs
-- KEYS[8 + j]      P:claims:<node j>        hash id -> worker   (j = 1 .. k)
-- KEYS[8 + k + i]  P:available:<worker i>   zset id -> seq      (i = 1 .. m)
--
-- ARGV[1]  timeout: a node whose last heartbeat is older than this (seconds, by the
--          server's clock) is dead
-- ARGV[2]  max_node_deaths       ARGV[3]  k, candidate nodes    ARGV[4]  m, workers
-- ARGV[5]  the error type to record (toniq.NodeLost)
-- ARGV[6 .. 5 + k]          the candidate node ids, in the order of their claim KEYS
-- ARGV[6 + k .. 5 + k + m]  the worker names, in the order of their queue KEYS
--
-- Two phases. The client first reads, without writing: the server's TIME, P:nodes,
-- P:claimers and the workers (HVALS) of the claim sets of candidate nodes: registered nodes
-- whose heartbeat looks too old, and nodes with a claim set but no registration. This script
-- then checks everything again, so concurrent callers take each job exactly once:
--   * a candidate that heart-beat since (heartbeat >= now - timeout) is skipped;
--   * a candidate still registered but silent is dead: its jobs are taken, then it is
--     unregistered and reported, so that its heartbeat fails and it registers again;
--   * a candidate not registered has its claim set swept (a node that unregistered
--     without handing its jobs back, or one another caller has just taken over);
--   * a job in a claim set is taken only if it is still RUNNING under that node; stale
--     entries are dropped. If one of its jobs is of a worker whose queue is not in KEYS
--     (claimed between the two phases), the node is left as it is, jobs and registration:
--     the next call finds it again with that worker and takes all its jobs at once (so a
--     job's company, which decides the blame, is counted right).
-- A taken job gets a NodeLost error and node_deaths + 1; it goes back to its own place in
-- its worker's FIFO with its attempt given back, or to FAILED at max_node_deaths, but only
-- if it was the only job its node ran (alone): a job that died in company stays at
-- max_node_deaths - 1 deaths, a suspect that claim.lua hands out only alone.
-- Returns {dead node ids, requeued ids, failed ids}.

local timeout, max_deaths = tonumber(ARGV[1]), tonumber(ARGV[2])
local k, m, kind = tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5]
local queues = worker_keys(6 + k, m, 8 + k, 1)
local t = now()
local finished = fmt(t)
local dead, requeued, failed = {}, {}, {}
for j = 1, k do
  local node, claims = ARGV[5 + j], KEYS[8 + j]
  local beat = redis.call('ZSCORE', KEYS[1], node)
  local alive = beat and tonumber(beat) >= t - timeout
  if not alive then
    -- The jobs it still runs; stale entries are dropped.
    local lost = {}
    local complete = true
    local held = redis.call('HGETALL', claims)
    for h = 1, #held, 2 do
      local id = held[h]
      local job = load_job(KEYS[3], id)
      if job and job.state == 'running' and job.node == node then
        lost[#lost + 1] = {id, job}
        if not queues[job.worker] then complete = false end
      else
        redis.call('HDEL', claims, id)
      end
    end
    if not complete then lost = {} end -- all of them next time, so blame stays right
    -- Blame: a death counts in full only against a job that ran alone on the node.
    local alone = #lost == 1
    local company = 'with others'
    if alone then company = 'alone' end
    for _, entry in ipairs(lost) do
      local id, job = entry[1], entry[2]
      local deaths = job.node_deaths + 1
      if deaths >= max_deaths and not alone then
        deaths = max_deaths - 1 -- not proven guilty: a suspect, it runs alone next time
      end
      add_error(KEYS[4], id, reason_json(kind,
        'node ' .. node .. ' stopped heart-beating while running this job ' .. company
          .. ' (node lost ' .. string.format('%d', deaths) .. ' time(s))',
        job.attempt, node, t))
      job.node_deaths = deaths
      job.node = nil
      job.token = nil
      if deaths >= max_deaths then
        job.state = 'failed'
        job.finished_at = finished
        redis.call('ZADD', KEYS[5], finished, member(job.seq, id))
        incr(KEYS[8], job.worker, 1)
        failed[#failed + 1] = id
      else
        job.state = 'available'
        job.attempt = job.attempt - 1
        redis.call('ZADD', KEYS[queues[job.worker]], place(job), id)
        requeued[#requeued + 1] = id
      end
      save_job(KEYS[3], id, job)
      redis.call('HDEL', claims, id)
      decr(KEYS[7], job.worker, 1)
    end
    forget_empty_claims(KEYS[6], claims, node)
    -- A dead node is forgotten once its jobs are taken (else the next call does both).
    if beat and complete then
      redis.call('ZREM', KEYS[1], node)
      redis.call('HDEL', KEYS[2], node)
      dead[#dead + 1] = node
    end
  end
end
return {dead, requeued, failed}
