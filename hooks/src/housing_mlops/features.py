"""Preprocessing inside the model: the served model takes the 9 raw features.

This module is pickled by value into the model (see train.py), so serving needs no housing_mlops.
Preprocessing is one NumPy function (no ColumnTransformer, no per-column pandas work): on a single-row
request it costs tens of microseconds, where the pandas ColumnTransformer cost milliseconds (bench/).
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin
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
CATEGORICAL = "ocean_proximity"
CATEGORIES = ["<1H OCEAN", "INLAND", "ISLAND", "NEAR BAY", "NEAR OCEAN"]

# Coordinates seen along several directions let axis-aligned trees follow the coast and the valleys.
ANGLES_DEG = (15, 30, 45, 60, 75, 105, 120, 135, 150, 165)
# (latitude, longitude) of the big job centres: Los Angeles, San Francisco, San Diego, San Jose,
# Sacramento, Fresno.
CITIES = (
    (34.05, -118.25),
    (37.77, -122.42),
    (32.72, -117.16),
    (37.34, -121.89),
    (38.58, -121.49),
    (36.74, -119.79),
)
_ROTATION = np.array(
    [[np.cos(np.deg2rad(a)) for a in ANGLES_DEG], [np.sin(np.deg2rad(a)) for a in ANGLES_DEG]]
)
N_FEATURES = len(NUMERIC) + 4 + len(ANGLES_DEG) + len(CITIES) + 1


def prepare(frame) -> np.ndarray:
    """Raw features (a DataFrame, or a mapping of the 9 column names to 1-D arrays) → the booster's matrix.

    NaN-safe: a missing or non-finite value becomes NaN, which the booster routes on its own; an unknown
    ocean_proximity becomes NaN too (HousingModel.predict refuses it). The last column is the category's index.
    """
    # Column by column: selecting 8 columns of a DataFrame at once costs ~1 ms on one row, this ~50 us.
    x = np.column_stack([np.asarray(frame[name], dtype=np.float64) for name in NUMERIC])
    lon, lat, _age, rooms, bedrooms, population, households, income = x.T
    coords = x[:, :2]
    with np.errstate(divide="ignore", invalid="ignore"):
        per_household = population / households
        columns = [
            x,
            np.column_stack([rooms / households, bedrooms / rooms, per_household, income / per_household]),
            coords @ _ROTATION,
            np.column_stack([np.hypot(lat - c_lat, lon - c_lon) for c_lat, c_lon in CITIES]),
            _category_index(np.asarray(frame[CATEGORICAL]))[:, None],
        ]
    out = np.hstack(columns)
    out[~np.isfinite(out)] = np.nan
    return out


def _category_index(values: np.ndarray) -> np.ndarray:
    index = np.full(len(values), np.nan)
    for i, name in enumerate(CATEGORIES):
        index[values == name] = i
    return index


def refuse_unknown_categories(values: np.ndarray, unknown: np.ndarray) -> None:
    """ValueError naming the first value outside CATEGORIES; a missing value (None, NaN) is allowed.

    The booster would route an unknown category like a missing one, so a typo would be priced silently.
    """
    for row in np.flatnonzero(unknown):
        value = values[row]
        if value is None or (isinstance(value, float) and value != value):
            continue
        raise ValueError(
            f"input {CATEGORICAL!r}: row {row} holds {value!r}, not a category the model was trained on "
            f"(allowed: {', '.join(CATEGORIES)}; null for a missing value)"
        )


class FlatTrees:
    """The fitted booster's trees as flat NumPy arrays, walked for all trees at once, one level per step.

    HistGradientBoostingRegressor.predict runs a ColumnTransformer, then one Cython call (an OpenMP region) per
    tree: ~200 calls for one row. Here a prediction of a few rows is `max depth` vectorised steps instead, with the same splits (NaN and unknown
    categories follow `missing_go_to_left`, categorical splits use the same bitsets), so the results are
    identical (checked at fit time).
    """

    def __init__(self, booster: HistGradientBoostingRegressor) -> None:
        trees = [per_iteration[0] for per_iteration in booster._predictors]
        sizes = [len(t.nodes) for t in trees]
        offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        nodes = np.concatenate([t.nodes for t in trees])
        node_offset = np.repeat(offsets, sizes)
        leaf = nodes["is_leaf"].astype(bool)
        own = np.arange(len(nodes))
        # A leaf points to itself, so walking `depth` steps from every root lands on a leaf in every tree.
        self.left = np.where(leaf, own, nodes["left"] + node_offset).astype(np.intp)
        self.right = np.where(leaf, own, nodes["right"] + node_offset).astype(np.intp)
        self.feature = nodes["feature_idx"].astype(np.intp)
        self.threshold = nodes["num_threshold"].astype(np.float64)
        self.missing_left = nodes["missing_go_to_left"].astype(bool)
        self.categorical = nodes["is_categorical"].astype(bool) & ~leaf
        bitset_offsets = np.concatenate([[0], np.cumsum([len(t.raw_left_cat_bitsets) for t in trees])[:-1]])
        self.bitset = (nodes["bitset_idx"] + np.repeat(bitset_offsets, sizes)).astype(np.intp)
        self.left_bitsets = np.concatenate([t.raw_left_cat_bitsets for t in trees]).astype(np.uint32)
        known, f_idx_map = booster._bin_mapper.make_known_categories_bitsets()
        self.trees, self.known, self.f_idx_map = trees, known, f_idx_map
        self.known_bitsets = np.asarray(known, dtype=np.uint32)
        self.known_row = np.asarray(f_idx_map, dtype=np.intp)
        self.value = nodes["value"].astype(np.float64)
        self.roots = offsets.astype(np.intp)
        self.depth = int(nodes["depth"].max())
        self.baseline = float(np.ravel(booster._baseline_prediction)[0])
        # The booster's own input step (scikit-learn >= 1.4): categorical columns first, their values replaced
        # by their index among the categories seen in training (unknown -> NaN).
        pre = booster._preprocessor
        is_cat = np.asarray(booster.is_categorical_, dtype=bool) if pre is not None else None
        if pre is None or not is_cat.any():
            self.order, self.categories = None, []
        else:
            self.order = np.concatenate([np.flatnonzero(is_cat), np.flatnonzero(~is_cat)])
            self.categories = [
                np.asarray(c, dtype=np.float64) for c in pre.named_transformers_["encoder"].categories_
            ]

    @staticmethod
    def _in_bitset(bitsets: np.ndarray, row: np.ndarray, value: np.ndarray) -> np.ndarray:
        return ((bitsets[row, value >> 5] >> (value & 31).astype(np.uint32)) & 1).astype(bool)

    def _inputs(self, x: np.ndarray) -> np.ndarray:
        if self.order is None:
            return x
        x = x[:, self.order]
        for j, known in enumerate(self.categories):
            at = np.minimum(np.searchsorted(known, x[:, j]), len(known) - 1)
            x[:, j] = np.where(known[at] == x[:, j], at, np.nan)
        return x

    def predict(self, x: np.ndarray) -> np.ndarray:
        x = self._inputs(np.asarray(x, dtype=np.float64))
        if len(x) < 64:  # few rows: the vectorised walk; more: scikit-learn's per-tree Cython loop is faster
            return self._predict(x)
        from sklearn.utils._openmp_helpers import _openmp_effective_n_threads

        threads = _openmp_effective_n_threads()
        out = np.full(len(x), self.baseline)
        for tree in self.trees:
            out += tree.predict(x, self.known, self.f_idx_map, threads)
        return out

    def _predict(self, x: np.ndarray) -> np.ndarray:
        node = np.broadcast_to(self.roots, (len(x), len(self.roots))).copy()
        rows = np.arange(len(x))[:, None]
        for _ in range(self.depth):
            value = x[rows, self.feature[node]]
            missing = np.isnan(value)
            go_left = np.where(missing, self.missing_left[node], value <= self.threshold[node])
            cat = self.categorical[node] & ~missing
            if cat.any():
                at = node[cat]
                code = value[cat]
                valid = code >= 0
                code = np.where(valid, code, 0).astype(np.intp)
                in_left = self._in_bitset(self.left_bitsets, self.bitset[at], code)
                known = self._in_bitset(self.known_bitsets, self.known_row[self.feature[at]], code)
                # Negative or unknown categories are treated as missing values, as in scikit-learn.
                go_left[cat] = np.where(valid & (in_left | known), in_left, self.missing_left[at])
            node = np.where(go_left, self.left[node], self.right[node])
        return self.baseline + self.value[node].sum(axis=1)


class HousingModel(RegressorMixin, BaseEstimator):
    """`prepare` + HistGradientBoostingRegressor, predicting through `FlatTrees` (same numbers, faster)."""

    # `predict` takes any mapping of column name -> 1-D array (a DataFrame or a dict of NumPy columns): the
    # serving runtime (housing_mlops.runtime) then skips building a DataFrame per request.
    accepts_column_mapping = True

    def __init__(
        self,
        max_iter: int = 200,
        learning_rate: float = 0.1,
        max_depth: int | None = 8,
        max_leaf_nodes: int = 63,
        l2_regularization: float = 1.0,
        random_state: int | None = 42,
    ) -> None:
        self.max_iter = max_iter
        self.learning_rate = learning_rate
        self.max_depth = max_depth
        self.max_leaf_nodes = max_leaf_nodes
        self.l2_regularization = l2_regularization
        self.random_state = random_state

    def fit(self, frame, y) -> HousingModel:
        from threadpoolctl import threadpool_limits

        x = prepare(frame)
        # One OpenMP thread: on a 2-core machine shared with other work, two threads spin-wait on each other
        # (fits of 15-30 s measured, against 2-4 s with one thread).
        with threadpool_limits(1, user_api="openmp"):
            self.booster_ = self._booster().fit(x, y)
        self.trees_ = FlatTrees(self.booster_)
        sample = x[:: max(1, len(x) // 500)]
        if not np.allclose(self.trees_.predict(sample), self.booster_.predict(sample), rtol=1e-9, atol=1e-6):
            raise RuntimeError("FlatTrees disagrees with the booster it was built from")
        return self

    def _booster(self) -> HistGradientBoostingRegressor:
        return HistGradientBoostingRegressor(
            max_iter=self.max_iter,
            learning_rate=self.learning_rate,
            max_depth=self.max_depth,
            # depth 8 allows 256 leaves; 63 with some L2 fit best on the canonical split (bench/)
            max_leaf_nodes=self.max_leaf_nodes,
            l2_regularization=self.l2_regularization,
            early_stopping=False,  # 'auto' held out 10% of the rows and stopped early: worse RMSE (bench/)
            categorical_features=[N_FEATURES - 1],  # the category's index
            random_state=self.random_state,
        )

    def predict(self, frame) -> np.ndarray:
        x = prepare(frame)
        unknown = np.isnan(x[:, -1])
        if unknown.any():
            refuse_unknown_categories(np.asarray(frame[CATEGORICAL], dtype=object), unknown)
        return self.trees_.predict(x)


def build_model(
    max_iter: int, learning_rate: float, max_depth: int | None, random_state: int
) -> HousingModel:
    """All preprocessing plus the regressor, fit on a DataFrame of the raw features."""
    return HousingModel(max_iter, learning_rate, max_depth, random_state=random_state)
