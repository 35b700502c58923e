-- Test-only stand-in for lua-runtime/shim.lua: speaks the same frames (ready/load/call/rpc/reply/
-- result/log), runs scripts in the real globals (no sandboxing at all), and gives scripts a few
-- "parrot" helpers so a test can make the child misbehave on cue:
--   rpc(builtin, ...)   ask the broker for a built-in (serves nested calls while it waits)
--   raw_write(bytes)    write raw bytes to stdout (broken frames, huge length prefixes, garbage)
--   send(message)       write one well-formed frame with any message
--   exit(code)          os.exit
--   busy(seconds)       burn CPU for that long
--   last_opts()         the opts map of the call in progress
--   shim_flags()        the --name=value flags the shim was started with
--   current_call_id()   the id of the call in progress (to forge results)
local dir = arg[0]:match("^(.*)/[^/]*$") or "."
local mp = dofile(dir .. "/mp.lua")

local flags = {}
local argv = {}
for i = 1, #arg do
  argv[#argv + 1] = arg[i]
  local k, v = arg[i]:match("^%-%-([%w-]+)=(.*)$")
  if k then flags[k] = v end
end

local serve
local next_rpc = 0
local current_opts = {}
local current_id = nil

function rpc(builtin, ...)
  next_rpc = next_rpc + 1
  local id = next_rpc
  mp.send({"rpc", id, builtin, {...}})
  while true do
    local msg = mp.receive()
    if msg == nil then os.exit(0) end
    if msg[1] == "reply" and msg[2] == id then
      if msg[3] then return msg[4] end
      error(msg[4], 0)
    end
    serve(msg)
  end
end

function raw_write(bytes) mp.write_raw(bytes) end
function send(message) mp.send(message) end
function exit(code) os.exit(code or 0) end
function busy(seconds)
  local stop = os.clock() + seconds
  while os.clock() < stop do end
end
function last_opts() return current_opts end
function shim_flags() return flags end
function current_call_id() return current_id end

print = function(...)
  local parts = table.pack(...)
  for i = 1, parts.n do parts[i] = tostring(parts[i]) end
  mp.send({"log", "print", table.concat(parts, "\t", 1, parts.n)})
end

local baseline = {}
for k in pairs(_G) do baseline[k] = true end

local function functions()
  local names = {}
  for k, v in pairs(_G) do
    if type(v) == "function" and not baseline[k] then names[#names + 1] = k end
  end
  table.sort(names)
  return names
end

-- As the real shim: a call result carries the new function list (5th element) when it changed.
local reported = ""
local function changed()
  local names = functions()
  local key = table.concat(names, ",")
  if key == reported then return nil end
  reported = key
  return {functions = names}
end

serve = function(msg)
  local kind, id = msg[1], msg[2]
  if kind == "call" then
    local saved, saved_id = current_opts, current_id
    current_opts, current_id = msg[5] or {}, id
    local f = _G[msg[3]]
    if type(f) ~= "function" then
      mp.send({"result", id, true, {defined = false}})
    else
      local ok, value = pcall(f, table.unpack(msg[4]))
      local extra = changed()
      if ok then mp.send({"result", id, true, {defined = true, value = value}, extra})
      else mp.send({"result", id, false, tostring(value), extra}) end
    end
    current_opts, current_id = saved, saved_id
  elseif kind == "load" then
    local chunk, err = load(msg[3], msg[4], "t", _G)
    if not chunk then
      mp.send({"result", id, false, err})
      return
    end
    local ok, value = pcall(chunk)
    if ok then
      local names = functions()
      reported = table.concat(names, ",")
      mp.send({"result", id, true, {functions = names}})
    else
      mp.send({"result", id, false, tostring(value)})
    end
  else
    io.stderr:write("fakeshim: unexpected message " .. tostring(kind) .. "\n")
    os.exit(2)
  end
end

mp.send({"ready", {lua = _VERSION, builtins = {"Echo", "Fail", "Boom"}, argv = argv}})
while true do
  local msg = mp.receive()
  if msg == nil then break end
  serve(msg)
end
