"""Feature folders: the rules of each capability, free of socketio and aiohttp."""
