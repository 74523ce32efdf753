"""Idle keep-alive waits that a drain ends at once, without a task per wait.

Between two requests an HTTP/1.1 connection waits for the next request's first bytes, for
at most ``idle_connection_timeout_s``, and a draining server closes it at once. Waiting on
the client *and* the drain took a nursery and two tasks per request (bench/README.md,
HTTP/1.1 requests). Instead the wait runs in one cancel scope (its deadline the idle
timeout) that is noted here while it waits; one system task per drain event cancels the
noted scopes when the event is set.

Rules:

* A caller checks ``shutdown.is_set()`` before it waits: a scope noted after the event
  was set would not be cancelled.
* The drain's task is spawned by the first wait on an event and ends once it was set (or
  with the run); it only cancels scopes, so it cannot fail.
"""

from __future__ import annotations

import weakref

import trio

#: The scopes waiting now, per drain event (an event of a finished run goes with it).
_waiting: weakref.WeakKeyDictionary[trio.Event, set[trio.CancelScope]] = weakref.WeakKeyDictionary()


async def _cancel_when_set(shutdown: trio.Event, scopes: set[trio.CancelScope]) -> None:
    await shutdown.wait()
    for scope in list(scopes):
        scope.cancel()
    scopes.clear()


def drain_scopes(shutdown: trio.Event) -> set[trio.CancelScope]:
    """The set of scopes ``shutdown`` cancels when it is set: a waiter adds its scope
    before it waits and discards it after (check ``shutdown.is_set()`` first)."""
    scopes = _waiting.get(shutdown)
    if scopes is None:
        scopes = _waiting[shutdown] = set()
        trio.lowlevel.spawn_system_task(_cancel_when_set, shutdown, scopes)
    return scopes
