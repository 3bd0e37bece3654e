"""Writes tests/fixtures/mnist1d_reference.json from the reference generator.

    python3 -m pip install mnist1d==0.0.2.post1
    python3 scripts/make_mnist1d_fixture.py

The fixture holds, for the default arguments and for a non-default variant: every label,
every row's sum, a strided subset of full rows, and the time axis. cnnlab's generator
must reproduce them to within 1e-6 (tests/mnist1d_reference.rs).
"""
import json
import os

import numpy as np
from mnist1d.data import get_dataset_args, make_dataset
from mnist1d.utils import ObjectView

VARIANT = dict(num_samples=1000, train_split=0.7, template_len=12, padding=[20, 50],
               scale_coeff=0.3, max_translation=30, corr_noise_scale=0.4,
               iid_noise_scale=0.05, shear_scale=1.0, shuffle_seq=True,
               final_seq_length=60, seed=7)


def describe(args, train_stride, test_stride):
    d = make_dataset(args)
    return {
        "args": {k: v for k, v in vars(args).items() if k != "url"},
        "train_rows": list(range(0, len(d["y"]), train_stride)),
        "test_rows": list(range(0, len(d["y_test"]), test_stride)),
        "x_rows": d["x"][::train_stride].tolist(),
        "x_test_rows": d["x_test"][::test_stride].tolist(),
        "x_row_sums": d["x"].sum(1).tolist(),
        "x_test_row_sums": d["x_test"].sum(1).tolist(),
        "y": d["y"].tolist(),
        "y_test": d["y_test"].tolist(),
        "t": d["t"].tolist(),
    }


def main():
    out = {"generator": "mnist1d 0.0.2.post1 make_dataset", "numpy": np.__version__,
           "default": describe(get_dataset_args(), 97, 41),
           "variant": describe(ObjectView(dict(VARIANT)), 53, 29)}
    path = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "mnist1d_reference.json")
    with open(path, "w") as f:
        json.dump(out, f)
    print("wrote", os.path.normpath(path))


if __name__ == "__main__":
    main()
