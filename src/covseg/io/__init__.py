"""Readers and writers: every reader returns an array plus what is needed to write results back."""
