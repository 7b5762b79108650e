"""Packaging for dlpm (heavy-tailed diffusion models) and bem (its experiment manager)."""

from pathlib import Path

from setuptools import find_packages, setup

here = Path(__file__).parent
requirements = [
    line.strip()
    for line in (here / "requirements.txt").read_text().splitlines()
    if line.strip() and not line.startswith("#")
]

setup(
    name="dlpm",
    version="0.1.0",
    description="Denoising Levy Probabilistic Models: diffusion with alpha-stable noise",
    long_description=(here / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["bem", "bem.*", "dlpm", "dlpm.*"]),
    package_data={"dlpm": ["configs/*.yml"]},
    install_requires=requirements,
    extras_require={
        "dev": ["pytest>=7", "ruff>=0.5"],
        "neptune": ["neptune>=1.0"],
    },
)
