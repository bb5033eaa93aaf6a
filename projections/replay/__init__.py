"""Replay and audit: rebuild the tables from the log, verify them row by row, swap a
verified rebuild in, and explain any row by the records behind it."""
