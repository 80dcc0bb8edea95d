"""Tests of the Genesys Cloud plugin against the fake Genesys Cloud."""
