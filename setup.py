"""Package discovery only; everything else is in pyproject.toml.

The built-in plugins live in the folder ``plugins/`` but install as ``agentd_plugins``
(a bare ``plugins`` package would collide with other distributions), and setuptools'
``packages.find`` does not follow a ``package-dir`` rename, so the list is computed here.
"""

from setuptools import find_packages, setup

packages = find_packages(include=["agentd", "agentd.*"])
packages += ["agentd_plugins"] + [f"agentd_plugins.{name}" for name in find_packages("plugins")]

setup(packages=packages, package_dir={"agentd_plugins": "plugins"})
