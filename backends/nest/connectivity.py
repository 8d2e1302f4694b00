"""Moved to :mod:`backends.common.sparse` (shared by every delayed-spike simulator); kept as an alias."""

from backends.common.sparse import (  # noqa: F401
    INDEX, Form, add_forms, apply_op, conv_coo, estimate_add, estimate_apply, op_nnz, pool_coo, synapse_matrix)
