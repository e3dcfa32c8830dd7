"""Comments reach SQL from the engine's comment log, in batches, off the sender's path.

The log carries published batches (``{"room_id", "items"}``) and deletions
(``{"room_id", "deleted", "at", "by"}``) in order per room, so a deletion never reaches
SQL before its comment. Inserts skip ids already stored: the log is at-least-once.
"""

from __future__ import annotations

from typing import Any

import structlog

from livecommerce import jsonutil
from livecommerce.engine import Engine
from livecommerce.features.comments.service import COMMENT_LOG
from livecommerce.persistence.social import Comments

log = structlog.get_logger(__name__)


class CommentWriter:
    def __init__(self, engine: Engine, comments: Comments) -> None:
        self.comments = comments
        self.written = 0
        engine.on_log(COMMENT_LOG, self.write)

    async def write(self, batch: list[dict[str, Any]]) -> None:
        rows: list[dict[str, Any]] = []
        deleted: dict[str, tuple[int, str]] = {}
        for entry in batch:
            record = jsonutil.loads(entry["c"])
            if "deleted" in record:
                deleted[record["deleted"]] = (record["at"], record["by"])
                continue
            rows += [_row(record["room_id"], item) for item in record["items"]]
        self.written += await self.comments.write(rows, deleted)
        log.debug("comments_written", count=len(rows), deleted=len(deleted))


def _row(room_id: str, item: dict[str, Any]) -> dict[str, Any]:
    user = item["user"]
    return {
        "id": item["id"],
        "room_id": room_id,
        "user_id": user["id"],
        "user_name": user["name"],
        "user_role": user["role"],
        "text": item["text"],
        "created_at": item["at"],
    }
