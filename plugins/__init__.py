"""agentd's built-in plugins (installed as ``agentd_plugins``).

Each folder is one plugin with its own README; each registers through the entry-point
group ``agentd`` in pyproject.toml, exactly as a third-party plugin would.
"""
