from pathlib import Path

from setuptools import find_packages, setup

version = {}
exec(Path("minidl/_version.py").read_text(), version)

setup(
    name="minidl",
    version=version["__version__"],
    description="A from-scratch deep-learning library on NumPy/CuPy with explicit backward passes",
    long_description=Path("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["minidl", "minidl.*"]),
    python_requires=">=3.10",
    install_requires=["numpy>=1.24", "scipy>=1.10", "pillow>=9.5", "tqdm>=4.60"],
    extras_require={
        "gpu": ["cupy-cuda12x>=13"],
        "plot": ["matplotlib>=3.6"],
        "test": [
            "pytest>=7",
            "hypothesis>=6.80",
            "scikit-learn>=1.2",
            "torch==2.13.0",
            "matplotlib>=3.6",
            "threadpoolctl>=3",  # the benchmarks limit NumPy's BLAS threads with it
        ],
    },
)
