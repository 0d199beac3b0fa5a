-- fail_unrunnable.lua: fail AVAILABLE jobs whose worker no registered node runs.
--
-- KEYS[1]  P:nodeinfo          hash  node -> JSON info (its "workers" list)
-- KEYS[2]  P:jobs              hash  id -> record (JSON)
-- KEYS[3]  P:errors            hash  id -> JSON list of errors
-- KEYS[4]  P:failed            zset  member(seq, id) -> finished_at
-- KEYS[5]  P:count:failed      hash  worker -> FAILED jobs
-- KEYS[5 + i]  P:available:<worker i>  zset id -> seq   (i = 1 .. m)
--
-- ARGV[1]  older_than: only jobs enqueued more than this many seconds before the server's
--          now are failed
-- ARGV[2]  m, the number of workers   ARGV[3]  the most jobs to fail per worker in one call
-- ARGV[4]  the error type to record (toniq.CannotRun)
-- then 2 per worker: name, the error message
--
-- Two phases: the client first reads P:nodeinfo and P:workers to find workers that no
-- registered node runs and that have AVAILABLE jobs. This script reads P:nodeinfo again and
-- skips any worker a node registered since. Jobs are looked at oldest first, at most
-- ARGV[3] per worker per call (the node calls this every few seconds).
-- Returns the ids of the jobs it failed.

local older_than, m, limit, kind = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
local known = {}
for _, raw in ipairs(redis.call('HVALS', KEYS[1])) do
  local info = cjson.decode(raw)
  for _, w in ipairs(info.workers or {}) do
    known[w] = true
  end
end
local t = now()
local finished = fmt(t)
local out = {}
for i = 1, m do
  local worker, message, queue = ARGV[3 + 2 * i], ARGV[4 + 2 * i], KEYS[5 + i]
  if not known[worker] then
    local ids = redis.call('ZRANGE', queue, 0, limit - 1)
    for _, id in ipairs(ids) do
      local job = load_job(KEYS[2], id)
      if job and job.state == 'available' and job.worker == worker
          and num(job.enqueued_at) < t - older_than then
        add_error(KEYS[3], id, reason_json(kind, message, job.attempt, nil, t))
        job.state = 'failed'
        job.finished_at = finished
        save_job(KEYS[2], id, job)
        redis.call('ZREM', queue, id)
        redis.call('ZADD', KEYS[4], finished, member(job.seq, id))
        incr(KEYS[5], worker, 1)
        out[#out + 1] = id
      end
    end
  end
end
return out
