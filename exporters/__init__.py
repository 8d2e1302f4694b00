"""Populated by the NIR/backends issues; see DESIGN.md."""
