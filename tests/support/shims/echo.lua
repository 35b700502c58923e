-- Test-only minimal shim: "ready", then every call returns its first argument. No load support.
local dir = arg[0]:match("^(.*)/[^/]*$") or "."
local mp = dofile(dir .. "/mp.lua")
mp.send({"ready", {lua = _VERSION, builtins = {}}})
while true do
  local msg = mp.receive()
  if msg == nil then break end
  if msg[1] == "call" then mp.send({"result", msg[2], true, {defined = true, value = msg[4][1]}})
  else mp.send({"result", msg[2], true, {functions = {}}}) end
end
