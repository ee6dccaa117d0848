"""Tests against real external peers (here: a Rails ActionCable server that mimics Chatwoot)."""
