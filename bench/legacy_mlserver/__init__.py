"""Today's runtime until issue 22, kept as bench/'s "legacy" contender: MLServer 1.7 + mlserver-mlflow with our
V2 REST fast path (server.py) and runtime (runtime.py) as they were in housing_mlops before the move to the
KServe SDK; the binary tensor codec is still housing_mlops.binary (unchanged, pure numpy/orjson), imported from
hooks/src on its PYTHONPATH.

It needs its own venv (mlserver pins starlette<0.47, which conflicts with kserve's starlette>=1.3.1): bench/run.py
builds one once, from the test-only MLServer stand-in image's hashed lock, into .local/bench/legacy-venv
(bench/legacy_venv.py; `python bench/legacy_venv.py` builds it alone), or takes $HOUSING_BENCH_LEGACY_PYTHON, and
runs the server as

    PYTHONPATH=bench:hooks/src MLSERVER_MODEL_NAME=housing-model \
        MLSERVER_MODEL_IMPLEMENTATION=legacy_mlserver.runtime.HousingRuntime MLSERVER_MODEL_URI=DIR \
        MLSERVER_PARALLEL_WORKERS=0 .local/bench/legacy-venv/bin/python -m legacy_mlserver.server DIR

(hooks/src on the path only so that the pickled model's housing_mlops.features unpickles.) When the venv cannot be
built, the contender is skipped and the report says why.
"""
