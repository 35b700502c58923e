"""The core: the store (index + files), instance metadata, the event outbox."""
