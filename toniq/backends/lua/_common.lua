-- _common.lua: helpers shared by every toniq script. The loader (script_source in
-- toniq/backends/redis.py) puts the helpers a script names (and the helpers those name) in
-- front of it before SCRIPT LOAD, so every script is one self-contained program. Each
-- top-level `local` below is one helper, with the comment lines right above it. Nothing
-- here touches a key by itself: the helpers act only on key names their caller got in KEYS.
--
-- Job records (the "jobs" hash, id -> JSON) hold times as decimal strings written with
-- 17 significant digits ("inf" for a held job), never as JSON numbers: cjson writes numbers
-- with 14 digits, which would round a Unix time to 0.1 ms on every rewrite.

-- The Redis server's clock, in seconds: the only clock a state change may use.
local function now()
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end

-- A time as stored in a record and given to ZADD: exact, "inf" for a held job.
local function fmt(x)
  if x == math.huge then return 'inf' end
  return string.format('%.17g', x)
end

-- The inverse of fmt.
local function num(s)
  if s == 'inf' then return math.huge end
  return tonumber(s)
end

-- A job's place in "available:<worker>": node_deaths * LEVEL + seq. Jobs that never lost a
-- node (level 0) are claimed in seq order; jobs that did sit in higher levels, so a claim can
-- leave out suspects (node_deaths >= suspect_after) without reading past them, and find the
-- oldest suspect of a level in one step. Exact while seq < 2^44 and node_deaths < 512.
local LEVEL = 17592186044416 -- 2^44
local function place(job)
  return string.format('%.17g', math.min(job.node_deaths, 511) * LEVEL + job.seq)
end

-- The first entry of "available:<worker>" with a score in [lo, hi), as {id, seq, level},
-- or nil.
local function first_between(available, lo, hi)
  local top = '+inf'
  if hi ~= math.huge then top = '(' .. string.format('%.17g', hi) end
  local got = redis.call('ZRANGEBYSCORE', available, string.format('%.17g', lo), top,
    'WITHSCORES', 'LIMIT', 0, 1)
  if #got == 0 then return nil end
  local score = tonumber(got[2])
  local level = math.floor(score / LEVEL)
  return {got[1], score - level * LEVEL, level}
end

-- The member of a time-ordered set ("scheduled:<worker>", "failed"): the job's sequence
-- number, zero-padded, then its id, so jobs with the same time keep their enqueue order.
local function member(seq, id)
  return string.format('%016d', seq) .. ':' .. id
end

-- The id in a member of a time-ordered set.
local function member_id(m)
  return string.sub(m, 18)
end

local function load_job(jobs, id)
  local raw = redis.call('HGET', jobs, id)
  if raw then return cjson.decode(raw) end
  return nil
end

local function save_job(jobs, id, job)
  redis.call('HSET', jobs, id, cjson.encode(job))
end

-- Append one error (a JSON object as text) to a job's error list, without decoding the
-- list (tracebacks can be long; they are stored as the client wrote them).
local function add_error(errors, id, error_json)
  local old = redis.call('HGET', errors, id)
  if old then
    redis.call('HSET', errors, id, string.sub(old, 1, -2) .. ',' .. error_json .. ']')
  else
    redis.call('HSET', errors, id, '[' .. error_json .. ']')
  end
end

-- An error that is not an exception (a lost node, a worker no node runs), in the shape
-- of JobError.to_dict().
local function reason_json(kind, message, attempt, node, at)
  local node_json = 'null'
  if node then node_json = cjson.encode(node) end
  return '{"type":' .. cjson.encode(kind) .. ',"message":' .. cjson.encode(message)
    .. ',"traceback":"","attempt":' .. string.format('%d', attempt) .. ',"node":' .. node_json
    .. ',"at":' .. fmt(at) .. '}'
end

-- Counters per worker ("count:running", "count:failed", "count:done"); a field that
-- falls to zero is deleted, so an idle queue leaves nothing behind.
local function incr(hash, field, by)
  if by ~= 0 then redis.call('HINCRBY', hash, field, by) end
end

local function decr(hash, field, by)
  if by ~= 0 and redis.call('HINCRBY', hash, field, -by) <= 0 then
    redis.call('HDEL', hash, field)
  end
end

-- worker name -> KEYS index, from ARGV[first .. first + count - 1] naming KEYS[base + i *
-- stride] in order (stride 1: one key per worker; stride 2: two keys per worker).
local function worker_keys(first, count, base, stride)
  local map = {}
  for i = 0, count - 1 do
    map[ARGV[first + i]] = base + i * stride + 1
  end
  return map
end

-- How many values one command called from Lua takes at most (unpack() has a limit near
-- 8,000): an even number, so field/value and score/member pairs stay whole.
local CHUNK = 1000

-- One command over a long list of arguments, in chunks: redis.call(cmd, key, values...), or
-- values[first .. last] only (ARGV, say, with no copy of it into a table).
local function call_in_chunks(cmd, key, values, first, last)
  last = last or #values
  for c = first or 1, last, CHUNK do
    redis.call(cmd, key, unpack(values, c, math.min(last, c + CHUNK - 1)))
  end
end

-- HSET of many field/value pairs into a hash that may not exist yet. Redis keeps a small
-- hash as a listpack (up to hash-max-listpack-entries: 128 by default, 512 in some builds),
-- where setting or deleting a field scans the whole list: filling a new hash with 512 fields
-- took 1.2 ms on Redis 7.0, against 0.06 ms as a hash table, and deleting them as much again.
-- A value longer than hash-max-listpack-value (64) makes Redis create the hash as a table,
-- which it stays: a marker field with such a value goes first and is deleted right after
-- (not if a field has the marker's name: a job id may be any string).
local TABLE_MARK, TABLE_VALUE = '#as-table', string.rep('-', 256)
local function hset_many(key, values)
  local plain = #values < 64 or redis.call('EXISTS', key) == 1
  for f = 1, plain and 0 or #values, 2 do
    if values[f] == TABLE_MARK then
      plain = true
      break
    end
  end
  if plain then
    call_in_chunks('HSET', key, values)
    return
  end
  redis.call('HSET', key, TABLE_MARK, TABLE_VALUE)
  call_in_chunks('HSET', key, values)
  redis.call('HDEL', key, TABLE_MARK)
end

-- HMGET of a long list of fields, in chunks: the values in order (false where missing).
local function hmget(key, fields)
  local values = {}
  for c = 1, #fields, CHUNK do
    local got = redis.call('HMGET', key, unpack(fields, c, math.min(#fields, c + CHUNK - 1)))
    for k = 1, #got do values[c + k - 1] = got[k] end
  end
  return values
end

-- Leave the "claimers" set once a node's claim set is empty.
local function forget_empty_claims(claimers, claims, node)
  if redis.call('EXISTS', claims) == 0 then
    redis.call('SREM', claimers, node)
  end
end

-- Empty a node's hand-over list (P:handoff:<node>, see enqueue.lua): the jobs on it still
-- RUNNING under that node and the token they were handed with, each as {id, record, token,
-- payload}; wake-up markers and stale entries are dropped. EXISTS first: a user whose ACL
-- predates hand-over (no LRANGE) can still claim.
local function take_handed(handoff, jobs, node)
  local out = {}
  if redis.call('EXISTS', handoff) == 0 then return out end
  local handed = redis.call('LRANGE', handoff, 0, -1)
  redis.call('DEL', handoff)
  for _, msg in ipairs(handed) do
    local nl = string.find(msg, '\n', 1, true)
    if nl then
      local head = cjson.decode(string.sub(msg, 1, nl - 1))
      local job = load_job(jobs, head[1])
      if job and job.state == 'running' and job.node == node and job.token == head[3] then
        out[#out + 1] = {head[1], job, head[3], string.sub(msg, nl + 1)}
      end
    end
  end
  return out
end

-- Give a RUNNING job (its decoded record) back as AVAILABLE, as if never claimed: its
-- attempt back, out of its node's claim set, at its own place in its worker's FIFO.
local function give_back(jobs, claims, running, available, id, job)
  job.state = 'available'
  job.attempt = job.attempt - 1
  job.node = nil
  job.token = nil
  save_job(jobs, id, job)
  redis.call('ZADD', available, place(job), id)
  redis.call('HDEL', claims, id)
  decr(running, job.worker, 1)
end

-- ---------------------------------------------------------------------------------------
