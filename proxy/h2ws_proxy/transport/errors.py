"""What a byte stream raises when its peer or its transport is gone: one definition.

Rule: our streams (socket_stream, tls_stream) and trio's map the OS's errors to trio's
``BrokenResourceError`` (the peer or the network broke it) and ``ClosedResourceError`` (we
closed it); ``OSError`` is in the tuple for the few calls that work on a raw socket. Code
above the transport catches :data:`STREAM_GONE` and turns it into its own outcome, with the
side it came from (the relay's ``Side``), instead of listing the exceptions again.
"""

from __future__ import annotations

import trio

STREAM_GONE = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)
