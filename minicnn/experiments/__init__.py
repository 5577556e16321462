"""The seed thesis' experiments: Tables 7.1 (HAM10000) and 7.2 (X-ray), figures 7.1 and 8.1.

    python -m minicnn.experiments thesis --dataset ham10000 --data DIR [--weights FILE] [--seeds 3]
    python -m minicnn.experiments thesis --dataset xray --quick        # seconds, on a generated stand-in
"""

from minicnn.experiments.published import load_published, published_table
from minicnn.experiments.thesis import ThesisConfig, quick_config, run_thesis

__all__ = ["ThesisConfig", "load_published", "published_table", "quick_config", "run_thesis"]
