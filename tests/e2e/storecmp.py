"""Reading a cloq store's layers through its top file (h5py follows the external links)."""
import h5py
import numpy as np


def load_layers(path):
    out = {}
    with h5py.File(path, "r") as f:
        for b in f["layers"]:
            for m in f["layers"][b]:
                for d in f["layers"][b][m]:
                    out[(int(b), m, d)] = f["layers"][b][m][d][()]
    return out


def same_layers(a, b):
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def products(layers):
    """(block, module) -> B @ A in float64."""
    return {(b, m): layers[(b, m, "lora_B")].astype(np.float64) @ layers[(b, m, "lora_A")].astype(np.float64)
            for (b, m, d) in layers if d == "codes"}
