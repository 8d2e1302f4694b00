"""NIR in and out (to_nir, nirio, metadata, conventions, the export-nir command, the summaries of
inspect_nir) and the Plan every backend runs (plan/)."""
