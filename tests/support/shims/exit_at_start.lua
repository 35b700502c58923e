-- Test-only shim that dies before "ready", leaving a line on stderr.
io.stderr:write("exit_at_start: giving up before ready\n")
os.exit(3)
