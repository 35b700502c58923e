--- Frames on stdin/stdout: a 4-byte big-endian length, then one msgpack value (design.md "The wire",
-- sandbox/framing.py on the broker side).

local import = ...
local json = import("json")
local msgpack = import("msgpack")

local stdin, stdout, stderr = io.stdin, io.stdout, io.stderr
local read, write, flush = stdin.read, stdout.write, stdout.flush
local exit = os.exit
local pack, unpack = string.pack, string.unpack
local pcall, table_pack = pcall, table.pack

--- The frame limit in both directions: the broker's Limits.max_frame (shim flag --max-frame);
-- framing.DEFAULT_MAX_FRAME until configured.
local MAX_FRAME = 64 * 1024 * 1024

local wire = {}

--- `max_frame`: the frame limit, in bytes.
function wire.configure(options)
  MAX_FRAME = options.max_frame or MAX_FRAME
end

--- The frame limit in force.
function wire.max_frame()
  return MAX_FRAME
end

--- The broker broke the protocol: say why on stderr (the supervisor keeps it) and exit; the broker
-- restarts the process.
function wire.fail(reason)
  write(stderr, "lua-runtime: protocol error: ", reason, "\n")
  exit(1)
end

--- The next message from the broker, or nil at the end of input.
-- Runs with no hook armed (main thread, or limits.paused), so decoding errors can be caught here.
function wire.receive()
  local header = read(stdin, 4)
  if header == nil then
    return nil
  elseif #header < 4 then
    wire.fail("the input ends inside a frame header")
  end
  local length = unpack(">I4", header)
  if length > MAX_FRAME then
    wire.fail("a frame of " .. length .. " bytes exceeds the limit of " .. MAX_FRAME)
  end
  local payload = read(stdin, length) or ""
  if #payload < length then
    wire.fail("the input ends inside a frame")
  end
  local ok, message = pcall(msgpack.decode, payload)
  if not ok then
    wire.fail(message)
  end
  return message
end

--- Sends the message made of the arguments (["log", level, text], ...). Returns false and the
-- reason when it is over the frame limit; exits when the broker is gone.
-- Header and payload go out in one write, so a limit error raised between two instructions of a
-- script's print never leaves half a frame behind.
function wire.send(...)
  local payload, reason = msgpack.encode(json.array(table_pack(...)), MAX_FRAME)
  if payload == nil then
    return false, reason
  end
  if not (write(stdout, pack(">I4", #payload), payload) and flush(stdout)) then
    exit(1)
  end
  return true
end

function wire.log(level, text)
  wire.send("log", level, text)
end

return wire
