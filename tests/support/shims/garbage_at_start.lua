-- Test-only shim that answers with bytes that are not a frame of msgpack.
io.stdout:write("\0\0\0\3\193\193\193")
io.stdout:flush()
io.stdin:read("a")
