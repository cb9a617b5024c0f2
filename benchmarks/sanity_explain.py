"""The attribution sanity checks' figures (Adebayo et al. 2018), as tests/test_explain.py measures them.

    OMP_NUM_THREADS=1 python benchmarks/sanity_explain.py

LeNet-5 after 300 Adam steps on real MNIST (../shared/data), 100 correctly classified test digits.
For each attribution method: the median share of |attribution| within 2 px of the ink (pixels > 0.1)
against the share of the image that zone covers; and the median Spearman rank correlation between
the trained model's maps and a re-initialised model's (all pixels, |values|; and on the ink, signed).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent / "src"), str(HERE.parent / "tests")]


def main() -> None:
    from cnnlab.analysis.explain import attribute
    from cnnlab.data.mnist import load_mnist
    from conftest import real_mnist_dir
    from test_explain import correct_digits, ink_mass, quick_lenet, randomized_rank_correlation

    root = real_mnist_dir()
    train, test = load_mnist(root, train=True, download=False), load_mnist(root, train=False, download=False)
    model = quick_lenet(train.images, train.labels)
    x, y = correct_digits(model, test.images, test.labels)
    ink = x[:, 0].numpy() > 0.1
    out = {}
    for method in ("integrated_gradients", "saliency", "gradcam"):
        share, area = ink_mass(attribute(model, x, y, method=method).numpy(), ink)
        out[method] = {
            "ink_share_median": round(share, 3), "zone_area_median": round(area, 3),
            "spearman_reinit_all_pixels_abs": round(randomized_rank_correlation(model, x, y, method), 3),
            "spearman_reinit_on_ink_signed": round(
                randomized_rank_correlation(model, x, y, method, where=ink, signed=True), 3),
        }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
