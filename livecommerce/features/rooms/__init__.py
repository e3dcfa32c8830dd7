"""Rooms: lifecycle, products, pinning, the join snapshot."""
