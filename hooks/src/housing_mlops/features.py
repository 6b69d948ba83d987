"""Preprocessing inside the model: the served model takes the 9 raw features.

This module is pickled by value into the model (see train.py), so serving needs no housing_mlops.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, OrdinalEncoder

NUMERIC = [
    "longitude",
    "latitude",
    "housing_median_age",
    "total_rooms",
    "total_bedrooms",
    "population",
    "households",
    "median_income",
]
CATEGORIES = ["<1H OCEAN", "INLAND", "ISLAND", "NEAR BAY", "NEAR OCEAN"]


def derived(x: np.ndarray) -> np.ndarray:
    """Ratios and rotated coordinates from the 8 numeric columns (NaN-safe: the booster handles NaN)."""
    lon, lat, _age, rooms, bedrooms, population, households, _income = (x[:, i] for i in range(8))
    with np.errstate(divide="ignore", invalid="ignore"):
        extra = np.column_stack(
            [
                rooms / households,
                bedrooms / rooms,
                population / households,
                lat + lon,
                lat - lon,
                np.hypot(lat - 34.05, lon + 118.25),  # distance to Los Angeles
                np.hypot(lat - 37.77, lon + 122.42),  # distance to San Francisco
            ]
        )
    extra[~np.isfinite(extra)] = np.nan
    return np.hstack([x, extra])


def build_pipeline(max_iter: int, learning_rate: float, max_depth: int | None, random_state: int) -> Pipeline:
    """All preprocessing plus the regressor, fit on a DataFrame of the raw features."""
    numeric = FunctionTransformer(derived, validate=False, feature_names_out=None)
    columns = ColumnTransformer(
        [
            (
                "numeric",
                Pipeline([("to_float", FunctionTransformer(_as_float)), ("derived", numeric)]),
                NUMERIC,
            ),
            (
                "ocean",
                OrdinalEncoder(
                    categories=[CATEGORIES],
                    handle_unknown="use_encoded_value",
                    unknown_value=np.nan,
                    dtype=float,
                ),
                ["ocean_proximity"],
            ),
        ],
        sparse_threshold=0,
    )
    n_numeric = len(NUMERIC) + 7
    booster = HistGradientBoostingRegressor(
        max_iter=max_iter,
        learning_rate=learning_rate,
        max_depth=max_depth,
        categorical_features=[n_numeric],  # the ordinal-encoded ocean_proximity
        random_state=random_state,
    )
    return Pipeline([("features", columns), ("model", booster)])


def _as_float(frame: pd.DataFrame | np.ndarray) -> np.ndarray:
    return np.asarray(frame, dtype=np.float64)
