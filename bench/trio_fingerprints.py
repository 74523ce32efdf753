"""Print the installed trio's fingerprints as an entry of ``TESTED_TRIO_SOURCES``.

    PYTHONPATH=proxy .venv/bin/python bench/trio_fingerprints.py

The fingerprints are those of ``h2ws_proxy.transport.trio_waits.fingerprints()``: the
sources of the trio functions and classes the fenced wait and hook table copy or rely on.
Paste the entry into ``proxy/h2ws_proxy/transport/trio_sources_tested.py`` only after
reading what changed and running the wait's tests with that trio (that module's docstring).
"""

from __future__ import annotations

import trio

from h2ws_proxy.transport.trio_waits import fingerprints


def main() -> None:
    print("    (")
    print(f'        "{trio.__version__}",')
    print("        {")
    for name, digest in fingerprints().items():
        print(f'            "{name}": "{digest}",')
    print("        },")
    print("    ),")


if __name__ == "__main__":
    main()
