-- wrk script: replay pre-rendered HTTP/1.1 requests (bench/http_load.py writes them).
-- Usage: wrk -t T -c C -d D -s bench/wrk_replay.lua URL -- STEM
-- Thread t reads STEM.t, a file of records "<byte length>\n<request bytes>", and sends them in
-- order; past the end it starts over (those replays reuse nonces and count as "wrapped").
-- Prints one line: RESULT key=value ... (counts by status class, latency percentiles in us).

local threads = {}

function setup(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end

function init(args)
  local f = assert(io.open(args[1] .. "." .. id, "rb"))
  local data = f:read("*a")
  f:close()
  reqs = {}
  local pos = 1
  while pos <= #data do
    local nl = data:find("\n", pos, true)
    local len = tonumber(data:sub(pos, nl - 1))
    reqs[#reqs + 1] = data:sub(nl + 1, nl + len)
    pos = nl + len + 1
  end
  n = 0
  s2 = 0
  s4 = 0
  s5 = 0
  wrapped = 0
end

function request()
  n = n + 1
  if n > #reqs then
    wrapped = wrapped + 1
    return reqs[(n - 1) % #reqs + 1]
  end
  return reqs[n]
end

function response(status, headers, body)
  if status < 300 then
    s2 = s2 + 1
  elseif status < 500 then
    s4 = s4 + 1
  else
    s5 = s5 + 1
  end
end

function done(summary, latency, requests)
  local t = { s2 = 0, s4 = 0, s5 = 0, wrapped = 0 }
  for _, thread in ipairs(threads) do
    for k, _ in pairs(t) do
      t[k] = t[k] + thread:get(k)
    end
  end
  local e = summary.errors
  io.write(string.format(
    "RESULT requests=%d duration_us=%d s2=%d s4=%d s5=%d wrapped=%d socket_errors=%d p50=%d p99=%d p100=%d\n",
    summary.requests, summary.duration, t.s2, t.s4, t.s5, t.wrapped,
    e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(99), latency.max))
end
