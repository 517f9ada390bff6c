"""Write dnnspec/data/digits.npz from scikit-learn's bundled digits set.

scikit-learn is only needed to run this script once; dnnspec ships the npz it writes.
Pixels are kept as uint8 (0..16) to keep the file small; the loader scales them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits


def main() -> None:
    digits = load_digits()
    out = Path(__file__).resolve().parent.parent / "dnnspec" / "data" / "digits.npz"
    np.savez_compressed(out, x=digits.data.astype(np.uint8), y=digits.target.astype(np.int64))
    print(f"wrote {out} ({out.stat().st_size} bytes, {len(digits.target)} samples)")


if __name__ == "__main__":
    main()
