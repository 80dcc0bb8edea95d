"""Genesys Cloud: settings, regions, and (in later modules) the API client and evidence."""
