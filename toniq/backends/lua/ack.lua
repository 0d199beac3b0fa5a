-- ack.lua: finish a batch of runs of one node.
--
-- KEYS[1]  P:jobs              hash  id -> record (JSON)
-- KEYS[2]  P:payloads          hash  id -> payload
-- KEYS[3]  P:errors            hash  id -> JSON list of errors
-- KEYS[4]  P:failed            zset  member(seq, id) -> finished_at
-- KEYS[5]  P:claimers          set   of nodes whose claim set is not empty
-- KEYS[6]  P:count:running     hash  worker -> RUNNING jobs
-- KEYS[7]  P:count:failed      hash  worker -> FAILED jobs
-- KEYS[8]  P:count:done        hash  worker -> jobs done
-- KEYS[9]  P:claims:<node>     hash  id -> worker, the jobs this node holds
-- KEYS[9 + i]  P:scheduled:<worker i>  zset member(seq, id) -> run_at
-- KEYS[10 + m] P:rate              hash  "<second % 64>:<worker>" -> "<second> <done> <errors>"
--
-- ARGV[1]           the node id
-- ARGV[2]           m, the number of workers (i = 1 .. m)
-- ARGV[3 .. m + 2]  the worker names, in the order of their KEYS
-- then 5 per outcome: id, token, worker index (1 .. m), retry_in (seconds, "" for none),
--                   error (JobError.to_dict() as JSON text, "" for a success)
--
-- An outcome counts only if its job is RUNNING under that token, held by this node, of
-- that worker; otherwise it is rejected and changes nothing (a node whose job was taken
-- over, handed back or deleted cannot finish it). A success deletes the job (record,
-- payload, errors) and adds one to count:done; an error is appended to the job's errors and
-- the job becomes SCHEDULED at the server's now + retry_in, or FAILED without a retry_in.
-- Accepted runs are also counted in the throughput ring "rate" (one field per worker and
-- second modulo 64, restarted when its second has passed; the key expires after 2 idle
-- minutes), which RedisBackend.finished_recently reads.
-- Returns {accepted count, {rejected ids}}.

local node, m = ARGV[1], tonumber(ARGV[2])
local first = m + 3
local t = now()
local accepted, rejected = 0, {}
local done_n, error_n = {}, {}
for w = 1, m do done_n[w], error_n[w] = 0, 0 end
for a = first, #ARGV, 5 do
  local id, token, w, retry_in, err = ARGV[a], ARGV[a + 1], tonumber(ARGV[a + 2]), ARGV[a + 3], ARGV[a + 4]
  local worker = ARGV[2 + w]
  local job = load_job(KEYS[1], id)
  if not job or job.state ~= 'running' or job.token ~= token or job.node ~= node
      or job.worker ~= worker then
    rejected[#rejected + 1] = id
  else
    accepted = accepted + 1
    if err == '' then done_n[w] = done_n[w] + 1 else error_n[w] = error_n[w] + 1 end
    redis.call('HDEL', KEYS[9], id)
    decr(KEYS[6], worker, 1)
    if err == '' then
      redis.call('HDEL', KEYS[1], id)
      redis.call('HDEL', KEYS[2], id)
      redis.call('HDEL', KEYS[3], id)
      incr(KEYS[8], worker, 1)
    else
      add_error(KEYS[3], id, err)
      job.node = nil
      job.token = nil
      if retry_in ~= '' then
        local run_at = fmt(t + tonumber(retry_in))
        job.state = 'scheduled'
        job.run_at = run_at
        job.finished_at = nil
        redis.call('ZADD', KEYS[9 + w], run_at, member(job.seq, id))
      else
        job.state = 'failed'
        job.finished_at = fmt(t)
        redis.call('ZADD', KEYS[4], job.finished_at, member(job.seq, id))
        incr(KEYS[7], worker, 1)
      end
      save_job(KEYS[1], id, job)
    end
  end
end
forget_empty_claims(KEYS[5], KEYS[9], node)
if accepted > 0 then
  local rate = KEYS[10 + m]
  local sec = math.floor(t)
  local sec_text = string.format('%.0f', sec)
  for w = 1, m do
    if done_n[w] + error_n[w] > 0 then
      local field = string.format('%d', sec % 64) .. ':' .. ARGV[2 + w]
      local old = redis.call('HGET', rate, field)
      local d, e = done_n[w], error_n[w]
      if old then
        local s, od, oe = string.match(old, '^(%d+) (%d+) (%d+)$')
        if s == sec_text then d, e = d + tonumber(od), e + tonumber(oe) end
      end
      redis.call('HSET', rate, field, sec_text .. ' ' .. string.format('%d', d) .. ' '
        .. string.format('%d', e))
    end
  end
  redis.call('EXPIRE', rate, 120)
end
return {accepted, rejected}
