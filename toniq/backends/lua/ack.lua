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
--
-- The records are read with one HMGET and successes deleted with one HDEL per hash, and the
-- counters moved once per worker: a command called from Lua costs about a microsecond before
-- it does anything, and acks are on every job's path.

local node, m = ARGV[1], tonumber(ARGV[2])
local first = m + 3
local t = now()
local accepted, rejected = 0, {}
local ids = {}
for a = first, #ARGV, 5 do
  ids[#ids + 1] = ARGV[a]
end
local raws = hmget(KEYS[1], ids)
-- A success is checked on the record's text where it has the layout claim.lua writes
-- (cjson.decode was a third of this script's time per job): it starts with its worker, and
-- has state, node and token in a row; as the values in a record are JSON strings and
-- numbers, these can only be its own top-level fields. Any other record is decoded.
local heads = {}
for w = 1, m do heads[w] = '{"worker":' .. cjson.encode(ARGV[2 + w]) .. ',' end
local leased_to = ',"state":"running","node":' .. cjson.encode(node) .. ',"token":"'
local accepted_ids, success_ids, handled = {}, {}, {}
local running, done, failed = {}, {}, {}
local done_n, error_n = {}, {}
for w = 1, m do done_n[w], error_n[w] = 0, 0 end
local k = 0
for a = first, #ARGV, 5 do
  k = k + 1
  local id, token, w, retry_in, err = ARGV[a], ARGV[a + 1], tonumber(ARGV[a + 2]), ARGV[a + 3], ARGV[a + 4]
  local worker = ARGV[2 + w]
  local raw, head, job, valid = raws[k], heads[w], nil, false
  if raw and head and err == '' and string.sub(raw, 1, #head) == head
      and string.find(raw, leased_to .. token .. '","started_at":', 1, true) then
    valid = true  -- as claim.lua writes it: no need to decode it (it is deleted)
  else
    job = raw and cjson.decode(raw)
    valid = job and job.state == 'running' and job.token == token and job.node == node
      and job.worker == worker
  end
  -- The same job twice in one batch: the second is rejected, as if it came later.
  if handled[id] or not valid then
    rejected[#rejected + 1] = id
  else
    handled[id] = true
    accepted = accepted + 1
    accepted_ids[#accepted_ids + 1] = id -- leaves the claim set, whatever the outcome
    running[worker] = (running[worker] or 0) + 1
    if err == '' then done_n[w] = done_n[w] + 1 else error_n[w] = error_n[w] + 1 end
    if err == '' then
      success_ids[#success_ids + 1] = id
      done[worker] = (done[worker] or 0) + 1
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
        failed[worker] = (failed[worker] or 0) + 1
      end
      save_job(KEYS[1], id, job)
    end
  end
end
call_in_chunks('HDEL', KEYS[9], accepted_ids)
call_in_chunks('HDEL', KEYS[1], success_ids)
call_in_chunks('HDEL', KEYS[2], success_ids)
call_in_chunks('HDEL', KEYS[3], success_ids)
for worker, n in pairs(running) do decr(KEYS[6], worker, n) end
for worker, n in pairs(done) do incr(KEYS[8], worker, n) end
for worker, n in pairs(failed) do incr(KEYS[7], worker, n) end
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
