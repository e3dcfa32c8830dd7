"""Moderation: mutes, comment deletion, banned words and slow mode, with an audit trail."""
