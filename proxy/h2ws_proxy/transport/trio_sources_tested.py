"""The trio versions whose internals ``trio_waits`` was tested with, by the fingerprints of
the sources it copies or relies on (``trio_waits.fingerprints()``).

A trio whose sources match none of these gets trio's public wait (and keeps its own
instruments table). How to add a newly tested trio: ``trio_waits``' docstring.
"""

from __future__ import annotations

#: (the versions, their fingerprints by name), oldest first.
#: Every trio release the project allows (pyproject: trio>=0.25,<0.36), read and tested;
#: their differences in these sources are formatting, annotations and comments, and the
#: public wait's way of deferring a KeyboardInterrupt.
TESTED_TRIO_SOURCES: tuple[tuple[str, dict[str, str]], ...] = (
    (
        "0.25.0, 0.25.1",
        {
            "trio.lowlevel.wait_readable": "830442e45aab8ec8fe5ec62e835a8124",
            "EpollIOManager.wait_readable": "1a141940760a60d7dcd872f70af5b548",
            "EpollIOManager._epoll_wait": "b9696ddd2dc58977a0391b23c095c4aa",
            "EpollIOManager._update_registrations": "b927f98bc53dae5971c6c56cf141ddec",
            "EpollIOManager.notify_closing": "9328d93fab45aa7bab1f53b16a5911c6",
            "EpollIOManager.process_events": "739e0d690946fd8d0ea8336bb304847d",
            "wake_all": "57b8127d27b44bc978154e8040c259c1",
            "EpollWaiters": "71cc7935852ab84b9e44fd70790fd1e9",
            "wait_task_rescheduled": "beb4846ee5ef3f500691fbaeed3d2387",
            "_async_yield": "dd0961ed761457a89a7799d414e8cc98",
            "WaitTaskRescheduled": "50acda408d1b1abbda9b528d0c0ecb60",
            "Instruments": "5f85517fea21bf3adb0edb46ddcc8664",
        },
    ),
    (
        "0.26.0, 0.26.1, 0.26.2",
        {
            "trio.lowlevel.wait_readable": "4790df8707792088c99597c92916f8c7",
            "EpollIOManager.wait_readable": "1a141940760a60d7dcd872f70af5b548",
            "EpollIOManager._epoll_wait": "b9696ddd2dc58977a0391b23c095c4aa",
            "EpollIOManager._update_registrations": "b927f98bc53dae5971c6c56cf141ddec",
            "EpollIOManager.notify_closing": "9328d93fab45aa7bab1f53b16a5911c6",
            "EpollIOManager.process_events": "739e0d690946fd8d0ea8336bb304847d",
            "wake_all": "57b8127d27b44bc978154e8040c259c1",
            "EpollWaiters": "71cc7935852ab84b9e44fd70790fd1e9",
            "wait_task_rescheduled": "beb4846ee5ef3f500691fbaeed3d2387",
            "_async_yield": "dd0961ed761457a89a7799d414e8cc98",
            "WaitTaskRescheduled": "50acda408d1b1abbda9b528d0c0ecb60",
            "Instruments": "5f85517fea21bf3adb0edb46ddcc8664",
        },
    ),
    (
        "0.27.0",
        {
            "trio.lowlevel.wait_readable": "4790df8707792088c99597c92916f8c7",
            "EpollIOManager.wait_readable": "1a141940760a60d7dcd872f70af5b548",
            "EpollIOManager._epoll_wait": "bb2dc52f2b5c35f18495b3a476d06f8d",
            "EpollIOManager._update_registrations": "b927f98bc53dae5971c6c56cf141ddec",
            "EpollIOManager.notify_closing": "9328d93fab45aa7bab1f53b16a5911c6",
            "EpollIOManager.process_events": "739e0d690946fd8d0ea8336bb304847d",
            "wake_all": "57b8127d27b44bc978154e8040c259c1",
            "EpollWaiters": "71cc7935852ab84b9e44fd70790fd1e9",
            "wait_task_rescheduled": "beb4846ee5ef3f500691fbaeed3d2387",
            "_async_yield": "dd0961ed761457a89a7799d414e8cc98",
            "WaitTaskRescheduled": "50acda408d1b1abbda9b528d0c0ecb60",
            "Instruments": "5f85517fea21bf3adb0edb46ddcc8664",
        },
    ),
    (
        "0.28.0",
        {
            "trio.lowlevel.wait_readable": "e523a8059b2e31da7ce34dbeee38b630",
            "EpollIOManager.wait_readable": "1a141940760a60d7dcd872f70af5b548",
            "EpollIOManager._epoll_wait": "bb2dc52f2b5c35f18495b3a476d06f8d",
            "EpollIOManager._update_registrations": "b927f98bc53dae5971c6c56cf141ddec",
            "EpollIOManager.notify_closing": "9328d93fab45aa7bab1f53b16a5911c6",
            "EpollIOManager.process_events": "739e0d690946fd8d0ea8336bb304847d",
            "wake_all": "57b8127d27b44bc978154e8040c259c1",
            "EpollWaiters": "71cc7935852ab84b9e44fd70790fd1e9",
            "wait_task_rescheduled": "00fabe2bce3b3c6de962186f0ad0b0a5",
            "_async_yield": "f7c88e6efdf67f707a313c19a12103ad",
            "WaitTaskRescheduled": "50acda408d1b1abbda9b528d0c0ecb60",
            "Instruments": "b9771ed3e3d1e44085c5cfd32560c256",
        },
    ),
    (
        "0.29.0",
        {
            "trio.lowlevel.wait_readable": "e523a8059b2e31da7ce34dbeee38b630",
            "EpollIOManager.wait_readable": "1a141940760a60d7dcd872f70af5b548",
            "EpollIOManager._epoll_wait": "bb2dc52f2b5c35f18495b3a476d06f8d",
            "EpollIOManager._update_registrations": "b927f98bc53dae5971c6c56cf141ddec",
            "EpollIOManager.notify_closing": "9328d93fab45aa7bab1f53b16a5911c6",
            "EpollIOManager.process_events": "739e0d690946fd8d0ea8336bb304847d",
            "wake_all": "57b8127d27b44bc978154e8040c259c1",
            "EpollWaiters": "71cc7935852ab84b9e44fd70790fd1e9",
            "wait_task_rescheduled": "c6691068007dfa474961824290bc9c12",
            "_async_yield": "f7c88e6efdf67f707a313c19a12103ad",
            "WaitTaskRescheduled": "50acda408d1b1abbda9b528d0c0ecb60",
            "Instruments": "b9771ed3e3d1e44085c5cfd32560c256",
        },
    ),
    (
        "0.30.0, 0.31.0, 0.32.0",
        {
            "trio.lowlevel.wait_readable": "e523a8059b2e31da7ce34dbeee38b630",
            "EpollIOManager.wait_readable": "1a141940760a60d7dcd872f70af5b548",
            "EpollIOManager._epoll_wait": "bb2dc52f2b5c35f18495b3a476d06f8d",
            "EpollIOManager._update_registrations": "b927f98bc53dae5971c6c56cf141ddec",
            "EpollIOManager.notify_closing": "9328d93fab45aa7bab1f53b16a5911c6",
            "EpollIOManager.process_events": "739e0d690946fd8d0ea8336bb304847d",
            "wake_all": "57b8127d27b44bc978154e8040c259c1",
            "EpollWaiters": "71cc7935852ab84b9e44fd70790fd1e9",
            "wait_task_rescheduled": "c6691068007dfa474961824290bc9c12",
            "_async_yield": "f7c88e6efdf67f707a313c19a12103ad",
            "WaitTaskRescheduled": "50acda408d1b1abbda9b528d0c0ecb60",
            "Instruments": "01699ecd868491a430a864e1f1886008",
        },
    ),
    (
        "0.33.0, 0.34.0, 0.35.0",
        {
            "trio.lowlevel.wait_readable": "e523a8059b2e31da7ce34dbeee38b630",
            "EpollIOManager.wait_readable": "1a141940760a60d7dcd872f70af5b548",
            "EpollIOManager._epoll_wait": "bb2dc52f2b5c35f18495b3a476d06f8d",
            "EpollIOManager._update_registrations": "b927f98bc53dae5971c6c56cf141ddec",
            "EpollIOManager.notify_closing": "9328d93fab45aa7bab1f53b16a5911c6",
            "EpollIOManager.process_events": "739e0d690946fd8d0ea8336bb304847d",
            "wake_all": "57b8127d27b44bc978154e8040c259c1",
            "EpollWaiters": "71cc7935852ab84b9e44fd70790fd1e9",
            "wait_task_rescheduled": "c6691068007dfa474961824290bc9c12",
            "_async_yield": "6b9cd7444475d9a9a60666bb1f33ff06",
            "WaitTaskRescheduled": "50acda408d1b1abbda9b528d0c0ecb60",
            "Instruments": "01699ecd868491a430a864e1f1886008",
        },
    ),
)
