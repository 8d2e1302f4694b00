"""Lava backend (Loihi 2 emulation, ``floating_pt`` / ``fixed_pt``); see docs/LAVA.md.

``backend.LavaBackend`` is the target (``run-backend --target lava`` / ``lava-fixed``);
``lowering`` lays a canonical Plan out as populations and sparse maps, ``quantize`` holds the
fixed-point scheme and the Loihi 2 core estimate, ``processes`` the Lava processes and models,
``report`` the ``inspect-nir --target lava`` table. Only ``processes`` and ``backend`` import
Lava, and only after :func:`backends.lava.compat.ensure_lava_importable` has run: lava-nc
0.10.0 does not import on Python >= 3.11 without it.
"""
