"""The original project's model, rebuilt as it was: a pyfunc PythonModel wrapping pandas preprocessing and a
HistGradientBoostingRegressor(max_depth=8, learning_rate=0.1, max_iter=200). The "stock" contender and the
"seed" recipe of the benchmark.

Pickled by value into the saved model (see run.py), so MLServer needs neither bench/ nor housing_mlops.
"""

from __future__ import annotations

import mlflow.pyfunc
import pandas as pd
from sklearn.ensemble import HistGradientBoostingRegressor

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


class SeedModel(mlflow.pyfunc.PythonModel):
    """Median imputation, ratio features and one-hot ocean_proximity in pandas, then the booster."""

    def __init__(self, random_state: int = 42) -> None:
        self.random_state = random_state
        self.median_bedrooms: float | None = None
        self.columns: list[str] = []
        self.model: HistGradientBoostingRegressor | None = None

    def _frame(self, raw: pd.DataFrame) -> pd.DataFrame:
        df = raw.copy()
        df[NUMERIC] = df[NUMERIC].astype("float64")
        df["total_bedrooms"] = df["total_bedrooms"].fillna(self.median_bedrooms)
        df["rooms_per_household"] = df["total_rooms"] / df["households"]
        df["bedrooms_per_room"] = df["total_bedrooms"] / df["total_rooms"]
        df["population_per_household"] = df["population"] / df["households"]
        ocean = pd.Categorical(df.pop("ocean_proximity"), categories=CATEGORIES)
        dummies = pd.get_dummies(ocean, prefix="ocean", dtype="float64")
        dummies.index = df.index
        df = pd.concat([df, dummies], axis=1)
        return df.reindex(columns=self.columns, fill_value=0.0) if self.columns else df

    def fit(self, raw: pd.DataFrame, target: pd.Series) -> SeedModel:
        self.median_bedrooms = float(raw["total_bedrooms"].median())
        x = self._frame(raw)
        self.columns = list(x.columns)
        self.model = HistGradientBoostingRegressor(
            max_depth=8, learning_rate=0.1, max_iter=200, random_state=self.random_state
        )
        self.model.fit(x, target)
        return self

    def predict(self, context, model_input: pd.DataFrame, params=None):
        return self.model.predict(self._frame(model_input))
