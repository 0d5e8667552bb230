"""framechain's framework: messages, transport, shared memory, stage runtime,
supervisor.

Nothing here opens sockets, reads the environment or starts work at import time.
"""
