"""algebranets: neural networks over algebras (AlgebraNets, arXiv 2006.07360) in JAX/Haiku."""

import setuptools

setuptools.setup(
    name="algebranets",
    version="0.1.0",
    description="AlgebraNets: neural networks whose weights and activations live in other algebras",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=setuptools.find_packages(include=["algebranets", "algebranets.*"]),
    python_requires=">=3.10",
    install_requires=[
        "jax>=0.4.30",
        "dm-haiku>=0.0.12",
        "optax>=0.2",
        "ml-collections>=0.1.1",
        "numpy>=1.24",
        # Training: checkpoints, TensorBoard event files, the quickstart's plot.
        "orbax-checkpoint>=0.12",
        "tensorboardX>=2.6",
        "matplotlib>=3.8",
        "tqdm>=4.60",
        "absl-py>=1.0",
    ],
    extras_require={
        # The image input pipelines (TFDS ImageNet/CIFAR, image folders) through tf.data.
        "images": [
            "tensorflow-cpu>=2.16; platform_machine == 'x86_64' or platform_machine == 'AMD64'",
            "tensorflow>=2.16; platform_machine != 'x86_64' and platform_machine != 'AMD64'",
            "tensorflow-datasets>=4.9",
            # TFDS 4.9.10 imports importlib_resources when it builds a dataset (its
            # dataset_builder.py) but does not declare it: without it every TFDS builder fails.
            "importlib_resources>=5",
        ],
        # Sweeps on a Ray cluster (python -m experiments.launch --backend=ray); only experiments/
        # imports it. The test command installs it too (scripts/run_tests.sh: test,cluster).
        "cluster": ["ray>=2.60"],
        # Only needed to run the test suite (with "cluster" for the Ray backend's tests).
        "test": [
            "pytest>=7",
            # Two test processes (scripts/run_tests.sh: -n 2 --dist loadfile): the suite is
            # mostly single-threaded XLA compilation, so two cores run it in ~half the time.
            "pytest-xdist>=3.5",
            # The linter the test command runs first (configuration: pyproject.toml [tool.ruff]).
            "ruff>=0.6",
            "tensorflow-cpu>=2.16; platform_machine == 'x86_64' or platform_machine == 'AMD64'",
            "tensorflow>=2.16; platform_machine != 'x86_64' and platform_machine != 'AMD64'",
            "tensorflow-datasets>=4.9",
            # TFDS 4.9.10 imports importlib_resources when it builds a dataset (its
            # dataset_builder.py) but does not declare it: without it every TFDS builder fails.
            "importlib_resources>=5",
            # An independent geometric-algebra implementation the Clifford algebras are tested
            # against (tests/test_clifford.py); pure Python (kingdon rather than clifford, whose
            # numba compilation takes ~0.5 s per signature).
            "kingdon>=3.0",
        ],
    },
)
