"""Bullet comments and likes."""
