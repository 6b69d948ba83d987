"""The dataset's schema, the canonical V2 request and the checks every job shares."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .errors import DataError
from .integrity import file_digest

NUMERIC_FEATURES = [
    "longitude",
    "latitude",
    "housing_median_age",
    "total_rooms",
    "total_bedrooms",
    "population",
    "households",
    "median_income",
]
CATEGORICAL_FEATURES = ["ocean_proximity"]
FEATURES = NUMERIC_FEATURES + CATEGORICAL_FEATURES
TARGET = "median_house_value"
CATEGORIES = ["<1H OCEAN", "INLAND", "ISLAND", "NEAR BAY", "NEAR OCEAN"]

# The dataset the project's data/housing.csv.dvc points to.
REAL_MD5 = "d1c47305887e2252bf1ccbd74ff159a6"
REAL_SIZE = 1423529

# The request of the original manual setup; `infer` and `helm test` send exactly this.
CANONICAL_ROW: dict[str, float | str] = {
    "longitude": -122.23,
    "latitude": 37.88,
    "housing_median_age": 41,
    "total_rooms": 880,
    "total_bedrooms": 129,
    "population": 322,
    "households": 126,
    "median_income": 8.3252,
    "ocean_proximity": "NEAR BAY",
}


def v2_request(rows: list[dict[str, float | str]]) -> dict:
    """Build a V2 inference request with one named input per feature."""
    inputs = []
    for name in FEATURES:
        categorical = name in CATEGORICAL_FEATURES
        inputs.append(
            {
                "name": name,
                "shape": [len(rows)],
                "datatype": "BYTES" if categorical else "FP64",
                "data": [row[name] for row in rows],
            }
        )
    return {"inputs": inputs}


CANONICAL_REQUEST = v2_request([CANONICAL_ROW])


def md5_of(path: Path) -> str:
    return file_digest(path, "md5")


def read_dataset(path: Path, *, with_target: bool = True) -> pd.DataFrame:
    """Read a housing CSV and check its schema, naming every problem found."""
    if not path.is_file():
        raise DataError(f"dataset not found: {path}")
    try:
        frame = pd.read_csv(path)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise DataError(f"{path}: not a readable CSV ({str(exc).splitlines()[0]})") from exc
    required = FEATURES + ([TARGET] if with_target else [])
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(missing)}")
    if frame.empty:
        raise DataError(f"{path}: no rows")
    numeric = NUMERIC_FEATURES + ([TARGET] if with_target else [])
    for column in numeric:
        values = pd.to_numeric(frame[column], errors="coerce")
        bad = values.isna() & frame[column].notna()
        if bad.any():
            row = int(bad.idxmax()) + 2  # +1 header, +1 one-based
            raise DataError(f"{path}: column {column} has a non-numeric value at line {row}")
        frame[column] = values.astype("float64")
    if with_target and frame[TARGET].isna().any():
        raise DataError(f"{path}: column {TARGET} has missing values")
    category = frame[CATEGORICAL_FEATURES[0]]
    # Text, and None where the CSV has no value (astype(str) alone would make that the category "nan").
    frame[CATEGORICAL_FEATURES[0]] = category.astype(str).astype(object).where(category.notna(), None)
    return frame


def synthetic_dataset(rows: int = 20640, seed: int = 7) -> pd.DataFrame:
    """A clearly synthetic dataset with the real schema, for machines without the real one."""
    rng = np.random.default_rng(seed)
    lon = rng.uniform(-124.3, -114.3, rows)
    lat = rng.uniform(32.5, 42.0, rows)
    age = rng.integers(1, 53, rows).astype(float)
    households = rng.gamma(4.0, 120.0, rows).round() + 1
    rooms = (households * rng.normal(5.3, 1.0, rows).clip(1.5)).round()
    bedrooms = (rooms * rng.normal(0.21, 0.03, rows).clip(0.08, 0.6)).round()
    population = (households * rng.normal(2.9, 0.7, rows).clip(1.0)).round()
    income = rng.gamma(3.5, 1.1, rows).clip(0.5, 15.0001)
    ocean = rng.choice(CATEGORIES, rows, p=[0.44, 0.32, 0.002, 0.11, 0.128])
    coast = {
        "<1H OCEAN": 60_000,
        "INLAND": -40_000,
        "ISLAND": 150_000,
        "NEAR BAY": 80_000,
        "NEAR OCEAN": 70_000,
    }
    value = (
        45_000 * income
        + np.vectorize(coast.get)(ocean)
        - 2_500 * (lat - 34.0) ** 2
        + 300 * age
        + 8_000 * (rooms / households - 5.3)
        + rng.normal(0, 25_000, rows)
    ).clip(15_000, 500_001)
    frame = pd.DataFrame(
        {
            "longitude": lon.round(2),
            "latitude": lat.round(2),
            "housing_median_age": age,
            "total_rooms": rooms,
            "total_bedrooms": bedrooms,
            "population": population,
            "households": households,
            "median_income": income.round(4),
            TARGET: value.round(),
            "ocean_proximity": ocean,
        }
    )
    frame.loc[rng.choice(rows, max(1, rows // 100), replace=False), "total_bedrooms"] = np.nan
    return frame
