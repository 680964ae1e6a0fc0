"""Offline data sets: sklearn digits and MNIST-1D (generated locally, never downloaded)."""
from __future__ import annotations

import numpy as np

from .errors import OpqError

DATASETS = ("digits", "digits-flat", "mnist1d")


def load_dataset(name: str, seed: int = 0):
    """(x_train, y_train, x_test, y_test) as float32/int64 numpy arrays in PyTorch layout.

    digits: (N, 1, 8, 8) in [0, 1]; digits-flat: (N, 64); mnist1d: (N, 1, 40).
    """
    if name in ("digits", "digits-flat"):
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split

        d = load_digits()
        x = (d.data / 16.0).astype(np.float32)
        y = d.target.astype(np.int64)
        xtr, xte, ytr, yte = train_test_split(x, y, test_size=0.2, random_state=seed, stratify=y)
        if name == "digits":
            xtr, xte = xtr.reshape(-1, 1, 8, 8), xte.reshape(-1, 1, 8, 8)
        return xtr, ytr, xte, yte
    if name == "mnist1d":
        from mnist1d.data import get_dataset_args, make_dataset

        args = get_dataset_args()
        args.seed = 42 + seed
        d = make_dataset(args)  # generated locally; never the download path
        xtr = d["x"].astype(np.float32)[:, None, :]
        xte = d["x_test"].astype(np.float32)[:, None, :]
        return xtr, d["y"].astype(np.int64), xte, d["y_test"].astype(np.int64)
    raise OpqError(f"unknown data set {name!r}; choose one of {DATASETS}")
