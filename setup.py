"""Packaging: the import package ``supervisor`` plus the twistd plugin module.

``twisted/plugins`` is deliberately a namespace directory without ``__init__.py``:
shipping one would shadow Twisted's own plugin package.
"""

from setuptools import find_packages, setup

setup(
    packages=find_packages(include=["supervisor", "supervisor.*"]) + ["twisted.plugins"],
    package_data={"supervisor": ["relay/web/static/*", "relay/web/static/**/*"]},
    include_package_data=False,
)
