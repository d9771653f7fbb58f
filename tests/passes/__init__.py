"""Tests for the pass infrastructure, every pass, plugins and explain."""
