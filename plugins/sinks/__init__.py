"""Sinks: where reports go after the local spool (file, http, s3). See README.md."""
