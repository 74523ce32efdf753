"""The package's shape (layers, cycles, sizes, fenced internals): .ci/check_architecture.py."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

SCRIPT = Path(__file__).resolve().parent.parent / ".ci" / "check_architecture.py"


def _checker() -> ModuleType:
    spec = importlib.util.spec_from_file_location("check_architecture", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_the_package_keeps_its_architecture() -> None:
    assert _checker().check() == []


def test_a_cycle_is_found_and_layers_go_down() -> None:
    checker = _checker()
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert checker.find_cycles(graph) == [["a", "b", "c"]]
    assert checker.layer_of("h2ws_proxy.transport.wakeup") > checker.layer_of(
        "h2ws_proxy.relay.tunnel"
    )


def test_a_library_private_name_is_caught() -> None:
    checker = _checker()
    import ast

    tree = ast.parse("conn._inbound_flow_control_window_manager.process_bytes(1)\n")
    private = checker.library_private_names()
    assert [name for name, _ in checker.private_uses(tree, private)] == [
        "_inbound_flow_control_window_manager"
    ]


def test_a_concrete_stream_class_check_is_caught() -> None:
    checker = _checker()
    import ast

    tree = ast.parse("if isinstance(s, LeanSocketStream) or getattr(c, 'send_now', None): pass\n")
    assert sorted(what for what, _ in checker.concrete_class_uses(tree, True)) == [
        "getattr",
        "isinstance LeanSocketStream",
    ]


def test_a_handler_listing_the_stream_errors_again_is_caught() -> None:
    checker = _checker()
    import ast

    tree = ast.parse(
        "try:\n    pass\nexcept (trio.BrokenResourceError, trio.ClosedResourceError, OSError):\n"
        "    pass\ntry:\n    pass\nexcept STREAM_GONE:\n    pass\n"
    )
    handlers = [node for node in ast.walk(tree) if isinstance(node, ast.ExceptHandler)]
    assert [checker._lists_stream_errors(handler) for handler in handlers] == [True, False]
