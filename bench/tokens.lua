-- wrk script: each request carries the next token of the file $TOKENS, never one twice in a
-- run (each thread takes every THREADS-th line from its own offset). $MODE is "verify"
-- (GET /verify with the token as Bearer) or "refresh" (POST /refresh with it).
local tokens = {}
local threads = {}
local counter = 0

function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

function init(args)
  local stride = tonumber(os.getenv("THREADS") or "2")
  local n = 0
  for line in io.lines(os.getenv("TOKENS")) do
    if n % stride == id then
      table.insert(tokens, line)
    end
    n = n + 1
  end
  next_token = 1
  mode = os.getenv("MODE") or "verify"
end

function request()
  local token = tokens[next_token]
  next_token = next_token + 1
  if next_token > #tokens then
    next_token = 1 -- out of tokens: repeats from here on (the script sizes the file to avoid it)
  end
  if mode == "refresh" then
    return wrk.format("POST", "/refresh", {["Content-Type"] = "application/json"},
      '{"refresh_token":"' .. token .. '"}')
  end
  return wrk.format("GET", "/verify", {["Authorization"] = "Bearer " .. token})
end
