"""orjson behind the ``json`` module interface python-socketio and aiohttp expect.

python-socketio calls ``dumps(obj, separators=...)``; orjson is always compact, so the
keyword arguments are accepted and ignored.
"""

from __future__ import annotations

from typing import Any

import orjson

JSONDecodeError = orjson.JSONDecodeError


def dumps(obj: Any, **_: Any) -> str:
    return orjson.dumps(obj).decode()


def dumpb(obj: Any) -> bytes:
    return orjson.dumps(obj)


def loads(data: str | bytes | bytearray | memoryview, **_: Any) -> Any:
    return orjson.loads(data)
