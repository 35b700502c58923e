-- Test-only shim that never says "ready": it waits for its input to end.
io.stdin:read("a")
