"""The HTTP front end: starlette on uvicorn, one catch-all endpoint over ``RestApi``."""
