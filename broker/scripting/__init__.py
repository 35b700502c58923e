"""The scripting bridge: callbacks, built-ins, and the sandboxes of a script set.

``callbacks`` declares every Lua callback once, with the function that builds its arguments;
``builtins`` implements every Lua built-in once (the Lua side declares the same names in
``lua-runtime/builtins.lua``); ``bridge`` owns the two sandbox processes of a script set and is the
only thing the core and the front ends talk to.
"""
