"""Lava backend (Loihi 2 emulation, ``floating_pt`` / ``fixed_pt``); see DESIGN.md and issue 6.

Import Lava only after :func:`backends.lava.compat.ensure_lava_importable` has run: lava-nc
0.10.0 does not import on Python >= 3.11 without it.
"""
