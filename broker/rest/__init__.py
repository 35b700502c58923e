"""REST handlers: plain functions over the core, served by two doors.

The HTTP front end (``broker.http``) and the Lua built-ins ``RestApiGet/Post/Put/Delete`` both call
``RestApi.handle``; there is no second copy of any endpoint (design.md, "One REST implementation, two
doors").
"""
