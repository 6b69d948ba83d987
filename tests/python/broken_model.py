"""A model that fails unexpectedly on one input value (test_limits.py: the server's answer to an unexpected
error). Its own module, so that the server process can unpickle it (PYTHONPATH=tests/python)."""

from __future__ import annotations

import numpy as np
from housing_mlops.features import HousingModel

TRIGGER = 13.0  # median_income that makes predict fail
SECRET = "internal detail that must not reach the client"


class BrokenModel(HousingModel):
    def predict(self, frame) -> np.ndarray:
        if np.any(np.asarray(frame["median_income"], dtype=float) == TRIGGER):
            raise RuntimeError(SECRET)
        return super().predict(frame)
