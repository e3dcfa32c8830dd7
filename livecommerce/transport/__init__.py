"""Socket.IO handlers and HTTP routes: decode -> authorize -> call a service -> answer."""
