"""The packages of the wheel (everything else is in pyproject.toml): opq_hw and its subpackages as
found, plus the design card's top-level folders mapped into the package as
`opq_hw._data.<folder>[.<subfolder>]` with all their files (read through `opq_hw.resources`).
The folders stay where they are in the repository; an editable install reads them there."""
import os

from setuptools import find_namespace_packages, find_packages, setup

FOLDERS = ("board_configs", "hls", "sim")  # = opq_hw.resources.FOLDERS

packages = find_packages(include=["opq_hw", "opq_hw.*"])
package_dir, package_data = {}, {}
for folder in FOLDERS:
    for sub in [""] + find_namespace_packages(where=folder, exclude=["*__pycache__*"]):
        name = ".".join(p for p in ("opq_hw._data", folder, sub) if p)
        packages.append(name)
        package_dir[name] = os.path.join(folder, *sub.split(".")) if sub else folder
        package_data[name] = ["*"]

setup(packages=packages, package_dir=package_dir, package_data=package_data)
