"""The engine seam; see base.py."""

from livecommerce.engine.base import Broadcast, DueTimer, Engine, LogEntry, Reservation

__all__ = ["Broadcast", "DueTimer", "Engine", "LogEntry", "Reservation", "create_engine"]


def create_engine(
    redis_url: str | None, node_id: str, *, cluster: bool = False, **options: float | int
) -> Engine:
    """The Redis engine when ``redis_url`` is given (a Redis Cluster's when ``cluster``:
    then the url lists seed nodes, comma-separated), else the in-process one."""
    if redis_url and cluster:
        from livecommerce.engine.redis_cluster import RedisClusterEngine

        return RedisClusterEngine(redis_url, node_id, **options)
    if redis_url:
        from livecommerce.engine.redis import RedisEngine

        return RedisEngine(redis_url, node_id, **options)
    from livecommerce.engine.memory import MemoryEngine

    return MemoryEngine(node_id, **options)  # type: ignore[arg-type]
