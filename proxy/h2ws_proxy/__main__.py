"""``python -m h2ws_proxy`` is the same as the ``h2ws-proxy`` command."""

from h2ws_proxy.cli import main

raise SystemExit(main())
