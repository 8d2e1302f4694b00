"""The Plan: the IR every backend runs (ir), how it is built from NIR (build), and its arithmetic (ops, readout)."""
