"""Packaging: the import package ``supervisor`` plus the twistd plugin module.

``twisted/plugins`` is deliberately a namespace directory without ``__init__.py``:
shipping one would shadow Twisted's own plugin package. ``package_dir`` maps the project
root explicitly, so an editable install puts the root on ``sys.path`` (a plain ``.pth``
entry) and Twisted's plugin scan finds ``twisted/plugins/supervisor_plugins.py`` there.
"""

from setuptools import find_packages, setup

setup(
    package_dir={"": "."},
    packages=find_packages(include=["supervisor", "supervisor.*"]) + ["twisted.plugins"],
    package_data={"supervisor": ["relay/web/static/*", "relay/web/static/**/*"]},
    include_package_data=False,
)
