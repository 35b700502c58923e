"""Several processes for one server (``Workers``, docs/workers.md): the supervisor that starts them
(``supervisor``) and the wake-up of the coordinator by the others (``wakeup``). The roles themselves
are ``broker.server.Server``'s: every worker runs one, and the one holding the coordinator lease
(``broker.core.lease``) runs the coordinator's part of it."""
