"""Package discovery only; everything else is in pyproject.toml.

The built-in plugins live in the folder ``plugins/`` but install as ``agentd_plugins``
(a bare ``plugins`` package would collide with other distributions), and setuptools'
``packages.find`` does not follow a ``package-dir`` rename, so the list is computed here.
"""

from setuptools import find_namespace_packages, find_packages, setup

# namespace packages too: agentd/hub/templates holds only data files (no __init__.py), and
# setuptools warns when package data sits in a folder the package list does not name
packages = find_namespace_packages(include=["agentd", "agentd.*"], exclude=["*.__pycache__"])
packages += ["agentd_plugins"] + [f"agentd_plugins.{name}" for name in find_packages("plugins")]

setup(packages=packages, package_dir={"agentd_plugins": "plugins"})
