"""Staff metrics: live per-second numbers, rollups, sales notices and the cluster view."""
