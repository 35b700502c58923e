--- Entry point of a sandbox process (design.md "Sandbox lifecycle"):
--
--   lua5.4 -E /path/to/lua-runtime/shim.lua [--memory-kb=N] [--max-log-lines=N] [--cpu=SECONDS]
--                                           [--max-frame=BYTES] [--trusted]
--
--   --memory-kb=N       soft cap on the Lua heap in KiB (default 262144): past it, the running call
--                       fails with "memory limit exceeded". The broker's RLIMIT_AS is the hard cap.
--   --max-log-lines=N   print lines sent per call (default 1000); the rest is dropped, with a warning.
--   --cpu=SECONDS       CPU budget of a load, and of a call whose opts carry no `cpu` (default 10).
--   --max-frame=BYTES   frame limit in both directions (default 67108864, the broker's
--                       Limits.max_frame); a call whose result would not fit fails cleanly.
--   --trusted           trusted mode (LuaTrustedScripts): scripts also get POLICY.trusted of
--                       sandbox.lua (io, os.execute, os.getenv, os.remove, os.rename, os.tmpname).
--
-- Loads the sibling modules by path, builds the script environment, then empties the real globals
-- table: every module keeps private locals of what it uses, so nothing that escapes the script
-- environment finds io, os, debug or load there. Then it says `ready` and serves frames on
-- stdin/stdout until stdin ends (exit 0). A protocol error exits 1; the broker restarts the process.

local G, arg, assert, exit, loadfile, match, pairs, stderr, string_library, tonumber, tointeger, unpack, version =
      _G, arg, assert, os.exit, loadfile, string.match, pairs, io.stderr, string, tonumber, math.tointeger,
      table.unpack, _VERSION

local FLAGS = {
  ["memory-kb"] = { option = "memory_kb", integer = true },
  ["max-log-lines"] = { option = "max_log_lines", integer = true },
  ["cpu"] = { option = "cpu" },
  ["max-frame"] = { option = "max_frame", integer = true },
}
--- Flags without a value.
local SWITCHES = { ["--trusted"] = "trusted" }

local function usage(problem)
  stderr:write("lua-runtime: ", problem, "\n",
               "usage: lua5.4 -E shim.lua [--memory-kb=N] [--max-log-lines=N] [--cpu=SECONDS] ",
               "[--max-frame=BYTES] [--trusted]\n")
  exit(2)
end

local options = { memory_kb = 256 * 1024, max_log_lines = 1000, cpu = 10, max_frame = 64 * 1024 * 1024,
                  trusted = false }
for i = 1, #arg do
  local name, text = match(arg[i], "^%-%-([%w-]+)=(.*)$")
  local flag = FLAGS[name]
  if SWITCHES[arg[i]] then
    options[SWITCHES[arg[i]]] = true
    goto next_argument
  end
  if flag == nil then
    usage("unknown argument " .. arg[i])
  end
  local value = tonumber(text)
  if flag.integer and value then
    value = tointeger(value)
  end
  if value == nil or value <= 0 then
    usage("--" .. name .. " needs a positive " .. (flag.integer and "integer" or "number"))
  end
  options[flag.option] = value
  ::next_argument::
end
if options.max_frame < 4096 then
  usage("--max-frame needs at least 4096 bytes")
end

local directory = match(arg[0], "^(.*)/[^/]*$") or "."
local modules = {}

--- Each module is a chunk that receives `import` and returns its table.
local function import(name)
  local module = modules[name]
  if module == nil then
    module = assert(loadfile(directory .. "/" .. name .. ".lua", "t"))(import)
    modules[name] = module
  end
  return module
end

local builtins, json, limits, loop, sandbox, wire =
      import("builtins"), import("json"), import("limits"), import("loop"), import("sandbox"), import("wire")

limits.configure({ memory_kb = options.memory_kb })
wire.configure({ max_frame = options.max_frame })
local env, functions = sandbox.build({
  rpc = loop.rpc,
  log = wire.log,
  max_log_lines = options.max_log_lines,
  trusted = options.trusted,
})

string_library.dump = nil
for name in pairs(G) do
  G[name] = nil
end

wire.send("ready", { lua = version, builtins = json.array({ unpack(builtins) }), trusted = options.trusted })
loop.serve(env, functions, options.cpu)
