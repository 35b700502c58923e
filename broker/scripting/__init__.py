"""The scripting bridge: callbacks, built-ins, and the sandboxes of a script set.

``callbacks`` declares every Lua callback once, with the function that builds its arguments;
``builtins`` implements every Lua built-in once (the Lua side declares the same names in
``lua-runtime/builtins.lua``); ``bridge`` (``ScriptSet``) is the only thing the core and the front
ends talk to, a facade over ``lifecycle`` (versions: reload, swap, retire), ``invoke`` (running
callbacks), ``dispatch`` (built-ins called from Lua) and ``status`` (what an operator sees).
"""
