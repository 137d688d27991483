"""Deliberately broken plugin used by tests/test_plugins.py."""

raise ImportError("hfself-broken is broken on purpose")
