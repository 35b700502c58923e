-- Test-only msgpack codec and frame I/O for the fake shims (plain lua5.4, no dependencies).
-- Not the product's codec: just enough of msgpack to talk to sandbox/framing.py.
local M = {}

local pack, unpack, concat = string.pack, string.unpack, table.concat

local function is_array(t)
  local n = #t
  if n == 0 then return next(t) == nil end
  local count = 0
  for _ in pairs(t) do count = count + 1 end
  return count == n
end

local function encode(v, out)
  local tv = type(v)
  if v == nil then out[#out + 1] = "\xc0"
  elseif v == false then out[#out + 1] = "\xc2"
  elseif v == true then out[#out + 1] = "\xc3"
  elseif tv == "number" then
    if math.type(v) == "integer" then
      if v >= 0 and v < 128 then out[#out + 1] = pack("B", v)
      else out[#out + 1] = "\xd3" .. pack(">i8", v) end
    else
      out[#out + 1] = "\xcb" .. pack(">d", v)
    end
  elseif tv == "string" then
    if utf8.len(v) then out[#out + 1] = "\xdb" .. pack(">I4", #v) .. v
    else out[#out + 1] = "\xc6" .. pack(">I4", #v) .. v end
  elseif tv == "table" then
    if is_array(v) then
      out[#out + 1] = "\xdd" .. pack(">I4", #v)
      for i = 1, #v do encode(v[i], out) end
    else
      local n = 0
      for _ in pairs(v) do n = n + 1 end
      out[#out + 1] = "\xdf" .. pack(">I4", n)
      for k, x in pairs(v) do encode(k, out); encode(x, out) end
    end
  else
    error("cannot encode a " .. tv)
  end
end

function M.encode(v)
  local out = {}
  encode(v, out)
  return concat(out)
end

local decode

local function decode_array(s, pos, n)
  local t = {}
  for i = 1, n do t[i], pos = decode(s, pos) end
  return t, pos
end

local function decode_map(s, pos, n)
  local t = {}
  for _ = 1, n do
    local k, v
    k, pos = decode(s, pos)
    v, pos = decode(s, pos)
    t[k] = v
  end
  return t, pos
end

decode = function(s, pos)
  local b = s:byte(pos)
  if b == nil then error("truncated msgpack") end
  pos = pos + 1
  if b < 0x80 then return b, pos end
  if b >= 0xe0 then return b - 0x100, pos end
  if b >= 0x80 and b <= 0x8f then return decode_map(s, pos, b - 0x80) end
  if b >= 0x90 and b <= 0x9f then return decode_array(s, pos, b - 0x90) end
  if b >= 0xa0 and b <= 0xbf then local n = b - 0xa0; return s:sub(pos, pos + n - 1), pos + n end
  if b == 0xc0 then return nil, pos end
  if b == 0xc2 then return false, pos end
  if b == 0xc3 then return true, pos end
  local fmt = ({[0xc4] = "s1", [0xc5] = ">s2", [0xc6] = ">s4", [0xd9] = "s1", [0xda] = ">s2", [0xdb] = ">s4",
                [0xca] = ">f", [0xcb] = ">d", [0xcc] = "B", [0xcd] = ">I2", [0xce] = ">I4", [0xcf] = ">I8",
                [0xd0] = "b", [0xd1] = ">i2", [0xd2] = ">i4", [0xd3] = ">i8"})[b]
  if fmt then return unpack(fmt, s, pos) end
  if b == 0xdc then local n; n, pos = unpack(">I2", s, pos); return decode_array(s, pos, n) end
  if b == 0xdd then local n; n, pos = unpack(">I4", s, pos); return decode_array(s, pos, n) end
  if b == 0xde then local n; n, pos = unpack(">I2", s, pos); return decode_map(s, pos, n) end
  if b == 0xdf then local n; n, pos = unpack(">I4", s, pos); return decode_map(s, pos, n) end
  error(string.format("unsupported msgpack byte 0x%02x", b))
end

function M.decode(s)
  local v = decode(s, 1)
  return v
end

io.stdout:setvbuf("full")

function M.write_raw(bytes)
  io.stdout:write(bytes)
  io.stdout:flush()
end

function M.send(msg)
  local payload = M.encode(msg)
  M.write_raw(pack(">I4", #payload) .. payload)
end

-- The next message, or nil at EOF.
function M.receive()
  local header = io.stdin:read(4)
  if header == nil or #header < 4 then return nil end
  local n = unpack(">I4", header)
  local payload = n > 0 and io.stdin:read(n) or ""
  return M.decode(payload)
end

return M
