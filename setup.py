"""Installs the ``clcae`` package and its ``clcae`` command: ``pip install -e .`` (``.[align]`` adds face
alignment, ``.[app]`` what ``clcae app`` needs (the same face alignment), ``.[test]`` pytest)."""
from pathlib import Path

from setuptools import find_packages, setup

here = Path(__file__).parent

setup(
    name="clcae",
    version="0.1.0",
    description="StyleGAN2 inversion and editing around CLCAE (CVPR 2023), with pSp/e4e/projection baselines",
    long_description=(here / "README.md").read_text(encoding="utf-8") if (here / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.10",
    packages=find_packages(include=["clcae", "clcae.*"]),
    package_data={"clcae.ops": ["csrc/*.cpp", "csrc/*.cu", "csrc/*.h"],
                  "clcae.app": ["static/*.html", "examples/*.jpg"]},
    include_package_data=True,
    install_requires=[
        "torch>=2.1",
        "torchvision",
        "numpy",
        "pillow",
        "lpips",
        "scipy",
        "tqdm",
        "tensorboard",
        "ninja",
        "pyyaml",
    ],
    entry_points={"console_scripts": ["clcae = clcae.console:console_entry"]},
    extras_require={
        "test": ["pytest", "pytest-xdist", "scikit-image"],
        "align": ["dlib-bin", "face_recognition_models"],
        # the web app's server is the standard library; it finds faces with the [align] extra
        "app": ["dlib-bin", "face_recognition_models"],
        # scripts/export.py: ONNX export (onnx) and its check / the onnxruntime backend (onnxruntime)
        "export": ["onnx", "onnxruntime"],
    },
)
